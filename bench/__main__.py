"""Run the project's benchmarks, one after another: ``python -m bench`` (or ``make bench``).

What runs, each as its own process (``python -m bench.<name> ...``), so that one
benchmark's compiled graphs, caches and threads never touch the next one's timings:

* the op benchmarks ``bench_instance_modulation``, ``bench_instance_avg_pool``,
  ``bench_instance_conv2d``, in quick mode (their headline shape, float32;
  ``--full`` runs every shape);
* the model benchmarks ``bench_models`` (parameters and FLOPs beside the paper's
  Table 3) and ``bench_model_speed`` (generator latency and a training step);
* ``bench_metrics`` (Inception features, the Fréchet distance, LPIPS; the whole
  FID of 1,000 against 1,000 images only with ``--full``, it takes many minutes on a CPU).

Each writes its JSON under ``bench/results/<device>/`` and prints its table.
GPU-only tools (``bench.gpu_check``, ``bench.aot*``) and ``bench_studio`` are not
benchmarks of the ops and are left to their own commands.

    python -m bench                 # everything above, op benchmarks in quick mode
    python -m bench --list          # the commands, without running them
    python -m bench --only bench_instance_conv2d bench_models
    python -m bench --full          # op benchmarks over all their shapes

Exit status: 0 when every benchmark finished, else 1 (the failures are named at the end).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

OP_BENCHMARKS = ("bench_instance_modulation", "bench_instance_avg_pool", "bench_instance_conv2d")
MODEL_BENCHMARKS = ("bench_models", "bench_model_speed")
OTHER_BENCHMARKS = ("bench_metrics",)
ALL_BENCHMARKS = OP_BENCHMARKS + MODEL_BENCHMARKS + OTHER_BENCHMARKS


def _options(name: str, full: bool) -> list[str]:
    """The quick-mode options of benchmark ``name`` (none with ``--full``, but the FID size)."""
    if name in OP_BENCHMARKS:
        return [] if full else ["--quick"]
    if name == "bench_metrics":
        return ["--fid_images", "1000"] if full else ["--fid_images", "0"]
    return []


def commands(full: bool, only: list[str] | None) -> list[list[str]]:
    """The command line of each benchmark to run, in order."""
    chosen = []
    for name in ALL_BENCHMARKS:
        if only and name not in only:
            continue
        chosen.append([sys.executable, "-m", f"bench.{name}", *_options(name, full)])
    return chosen


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="print the commands and exit")
    parser.add_argument("--full", action="store_true", help="op benchmarks over all their shapes, not --quick")
    parser.add_argument("--only", nargs="+", choices=ALL_BENCHMARKS, metavar="NAME",
                        help=f"run only these (of {', '.join(ALL_BENCHMARKS)})")
    args = parser.parse_args(argv)
    failed = []
    for cmd in commands(args.full, args.only):
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
    sys.exit(main())
