"""Run the project's benchmarks, one after another: ``python -m bench`` (or ``make bench``).

What runs, each as its own process (``python -m bench.<name> ...``), so that one
benchmark's compiled graphs, caches and threads never touch the next one's timings:

* ``peaks``: the machine's own float32/bfloat16 FLOP/s and copy bytes/s, measured first;
* the op benchmarks ``bench_instance_modulation``, ``bench_instance_avg_pool``,
  ``bench_instance_conv2d``, in quick mode (their headline shape, float32;
  ``--full`` runs every shape);
* the model benchmarks ``bench_models`` (parameters and FLOPs beside the paper's
  Table 3), ``bench_model_speed`` (generator latency and a training forward+backward) and
  ``bench_train_step`` (the whole training iteration; quick mode: 1 warm-up + 3 calls);
  with ``--official-code DIR`` (a tzt101/INADE checkout) both against the public code;
* ``bench_metrics`` (Inception features, the Fréchet distance, LPIPS; the whole
  FID of 1,000 against 1,000 images only with ``--full``, it takes many minutes on a CPU).

Each writes its JSON under ``bench/results/<device>/`` and prints its table; then
``python -m bench.report`` rewrites the tables of README.md and docs/PERFORMANCE.md from
the JSON and draws the plots (``bench/results/<device>/plots/``, with matplotlib).
GPU-only tools (``bench.gpu_check``, ``bench.aot*``) and ``bench_studio`` are not
benchmarks of the ops and are left to their own commands.

    python -m bench                 # everything above, op benchmarks in quick mode
    python -m bench --list          # the commands, without running them
    python -m bench --only bench_instance_conv2d bench_models
    python -m bench --full          # op benchmarks over all their shapes
    python -m bench --official-code ../INADE    # the model rows against the public code

Exit status: 0 when every benchmark finished, else 1 (the failures are named at the end).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

OP_BENCHMARKS = ("bench_instance_modulation", "bench_instance_avg_pool", "bench_instance_conv2d")
MODEL_BENCHMARKS = ("bench_models", "bench_model_speed", "bench_train_step")
OTHER_BENCHMARKS = ("bench_metrics",)
ALL_BENCHMARKS = ("peaks",) + OP_BENCHMARKS + MODEL_BENCHMARKS + OTHER_BENCHMARKS + ("report",)
TAKES_OFFICIAL_CODE = ("bench_model_speed", "bench_train_step")


def _options(name: str, full: bool, official_code: str | None = None) -> list[str]:
    """The quick-mode options of benchmark ``name`` (none with ``--full``, but the FID size)."""
    if official_code and name in TAKES_OFFICIAL_CODE:
        return ["--official-code", official_code, *_options(name, full)]
    if name == "bench_train_step":
        return [] if full else ["--warmup", "1", "--calls", "3", "--budget-calls", "1"]
    if name in OP_BENCHMARKS:
        return [] if full else ["--quick"]
    if name == "bench_metrics":
        return ["--fid_images", "1000"] if full else ["--fid_images", "0"]
    return []


def commands(full: bool, only: list[str] | None, official_code: str | None = None) -> list[list[str]]:
    """The command line of each benchmark to run, in order."""
    chosen = []
    for name in ALL_BENCHMARKS:
        if only and name not in only:
            continue
        chosen.append([sys.executable, "-m", f"bench.{name}", *_options(name, full, official_code)])
    return chosen


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="print the commands and exit")
    parser.add_argument("--full", action="store_true", help="op benchmarks over all their shapes, not --quick")
    parser.add_argument("--only", nargs="+", choices=ALL_BENCHMARKS, metavar="NAME",
                        help=f"run only these (of {', '.join(ALL_BENCHMARKS)})")
    parser.add_argument("--official-code", metavar="DIR",
                        help="a checkout of tzt101/INADE: the model benchmarks run against it")
    args = parser.parse_args(argv)
    failed = []
    for cmd in commands(args.full, args.only, args.official_code):
        shown = " ".join(["python", *cmd[1:]])
        if args.list:
            print(shown)
            continue
        print(f"\n## {shown}\n", flush=True)
        start = time.perf_counter()
        code = subprocess.call(cmd)
        print(f"({shown}: exit {code}, {time.perf_counter() - start:.0f} s)", flush=True)
        if code != 0:
            failed.append(shown)
    if failed:
        print("error: failed: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from inade.utils.errors import run_command

    sys.exit(run_command(main))  # Ctrl-C / SIGTERM: one line, exit 130 / 143 (a running benchmark is stopped)
