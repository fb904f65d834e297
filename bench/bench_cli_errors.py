"""Seconds from starting a command to its error line, for a mistyped option.

    python -m bench.bench_cli_errors                          # this tree
    python -m bench.bench_cli_errors --before /tmp/inade-old   # and an earlier tree beside it

Each command runs as a user starts it (a new process of this Python, the tree on
``PYTHONPATH``, an empty working folder) with one option typed wrong (``--batchsize``
for ``--batchSize`` …); the time is wall-clock seconds until the process has exited, the
median of ``--runs``. ``--before DIR`` times the same commands on another source tree (e.g.
``git archive <commit> | tar -x -C DIR``), run for run alternating with this one, so both
see the same machine load. Writes ``bench/results/<device>/cli_errors.json``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import load_note, write_results

ROOT = Path(__file__).resolve().parents[1]
# (what, argv after the interpreter: {tree} is the source tree, the last option mistyped)
COMMANDS = [
    ("train.py", ["{tree}/train.py", "--batchsize", "4"]),
    ("python -m inade.test", ["-m", "inade.test", "--batchsize", "4"]),
    ("python -m inade.metrics fid", ["-m", "inade.metrics", "fid", "a", "b", "--batchsize", "4"]),
    ("python -m inade.studio", ["-m", "inade.studio", "--chekpoint", "c.pt"]),
]


def time_once(tree: Path, argv: list[str]) -> tuple[float, str]:
    """``(seconds until exit, its stderr's error line)`` of one run in a fresh empty folder."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with tempfile.TemporaryDirectory() as cwd:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, *[a.format(tree=tree) for a in argv]], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=600)
        seconds = time.perf_counter() - t0
    lines = [line for line in proc.stderr.splitlines() if "error:" in line]
    if proc.returncode != 2 or not lines:
        raise SystemExit(f"{argv}: expected an error line and exit 2, got {proc.returncode}:\n{proc.stderr[-1500:]}")
    return seconds, lines[-1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--before", type=Path, default=None, help="an earlier source tree to time beside this one")
    p.add_argument("--before-label", default="before", help="its name in the table (e.g. the commit)")
    args = p.parse_args(argv)
    trees = [("this tree", ROOT)] + ([(args.before_label, args.before.resolve())] if args.before else [])
    rows = []
    for what, command in COMMANDS:
        times = {label: [] for label, _ in trees}
        line = {}
        for _ in range(args.runs):
            for label, tree in trees:
                s, line[label] = time_once(tree, command)
                times[label].append(s)
        for label, _ in trees:
            row = {"command": what, "tree": label, "median_s": statistics.median(times[label]),
                   "min_s": min(times[label]), "runs": args.runs, "error_line": line[label]}
            rows.append(row)
            print(f"{what:32s} {label:12s} median {row['median_s']:.2f} s  min {row['min_s']:.2f} s   {line[label][:90]}")
    path = write_results("cli_errors", rows, torch.device("cpu"), notes=load_note())
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
