"""Good neighbours: ``python -m bench.neighbours`` times our training step alone and beside 1, 2
and 4 busy processes, with gomp's default waiting (its threads spin before they sleep), with
``OMP_WAIT_POLICY=PASSIVE`` (they sleep at once) and with fewer threads, and counts how much
work the neighbours got done meanwhile. The defaults of ``train.py``, ``inade.test``,
``inade-synth`` and the Studio (:func:`inade.utils.cpu.thread_defaults`) come from this table.

* the step: :meth:`inade.training.trainer.Trainer.train_step` on the bench's fixed face batch
  (``bench_train_step.ours_step``), CelebAMask-HQ config at ``--ngf`` / ``--size`` (default a
  small one, 32 / 128, so that the whole grid takes minutes), float32, batch 1, VGG loss on;
* a neighbour: a Python busy loop (one process, one thread, never sleeps) — a user's other
  program; its loop count per second is reported beside the step's time;
* each (neighbours, setting) cell in its own process for the step (:func:`bench.common.isolated`),
  ``--warmup`` untimed steps then ``--calls`` timed ones, min / median / spread; ``--rounds``
  rounds of the whole grid, each cell keeping its fastest round (a busy spell of a shared
  machine only adds time). The 1-min load average before and after each cell is recorded:
  on a shared machine "alone" means beside whatever else runs there.

Writes ``bench/results/<device>/neighbours.json``; ``python -m bench.report`` makes the table.

    python -m bench.neighbours
    python -m bench.neighbours --neighbours 0 2 --settings passive --calls 2 --no-write
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
import time

import torch

from bench import common

SETTINGS = {
    "spin": ("gomp default (spin, then sleep)", None, None),
    "passive": ("OMP_WAIT_POLICY=PASSIVE", "PASSIVE", None),
    "1 thread": ("1 thread, OMP_WAIT_POLICY=PASSIVE", "PASSIVE", 1),
}
_LOOP = ("import signal, sys, time\n"
         "n = 0; t0 = time.perf_counter()\n"
         "def done(*a):\n"
         "    print(n / (time.perf_counter() - t0), flush=True); sys.exit(0)\n"
         "signal.signal(signal.SIGTERM, done)\n"
         "while True:\n"
         "    n += 1\n")


def worker(spec: dict) -> dict:
    """One cell: the step timed with this process's OpenMP settings (set by the parent)."""
    from bench import bench_train_step  # noqa: PLC0415

    torch.set_num_threads(spec["threads"])
    cfg = bench_train_step.model_config(spec)
    step, _ = bench_train_step.ours_step({**spec, "batch": 1, "precision": "fp32"}, cfg, None)
    seconds = common.time_calls(step, warmup=spec["warmup"], calls=spec["calls"])
    return {**common.sample_stats(seconds), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
            "torch_threads": torch.get_num_threads()}


def start_neighbours(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", _LOOP], stdout=subprocess.PIPE, text=True) for _ in range(n)]


def stop_neighbours(procs: list[subprocess.Popen]) -> list[float]:
    """Stop the busy loops; their loop counts per second (Python loops, one each)."""
    rates = []
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            out, _ = p.communicate(timeout=10)
            rates.append(float(out.strip().splitlines()[-1]))
        except (subprocess.TimeoutExpired, ValueError, IndexError):
            p.kill()
            p.communicate()
    return rates


def cell(base: dict, n: int, setting: str, isolated=common.isolated) -> dict:
    """One (neighbours, setting) measurement: neighbours started, the step's worker run, neighbours stopped."""
    label, policy, threads = SETTINGS[setting]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    spec = {**base, "threads": threads or base["threads"]}
    procs = start_neighbours(n)
    time.sleep(0.5 if n else 0)  # the loops are running before the step starts
    try:
        r = isolated("bench.neighbours", spec, run=functools.partial(subprocess.run, env=env))
    finally:
        rates = stop_neighbours(procs)
    row = {"neighbours": n, "setting": setting, "label": label, "threads": spec["threads"], **r}
    row.pop("samples_s", None)
    if rates:
        row["neighbour_Mloops_per_s"] = sum(rates) / len(rates) / 1e6
    return row


def fastest(rounds: list[list[dict]]) -> list[dict]:
    """Each cell from the round with its smallest min time (cells keyed by neighbours and setting)."""
    best = {}
    for rows in rounds:
        for r in rows:
            k = (r["neighbours"], r["setting"])
            if "min_ms" in r and ("min_ms" not in best.get(k, {}) or r["min_ms"] < best[k]["min_ms"]):
                best[k] = r
            best.setdefault(k, r)
    return [best[(r["neighbours"], r["setting"])] for r in rounds[0]]


def add_ratios(rows: list[dict]) -> list[dict]:
    """``x_vs_alone``: each cell's min over the same setting's min alone; ``x_vs_spin``: the
    gomp-default cell's min over this one's, beside the same neighbours."""
    alone = {r["setting"]: r.get("min_ms") for r in rows if r["neighbours"] == 0}
    spin = {r["neighbours"]: r.get("min_ms") for r in rows if r["setting"] == "spin"}
    for r in rows:
        if r.get("min_ms"):
            if alone.get(r["setting"]):
                r["x_vs_alone"] = r["min_ms"] / alone[r["setting"]]
            if spin.get(r["neighbours"]):
                r["speedup_vs_spin"] = spin[r["neighbours"]] / r["min_ms"]
    return rows


@common.interruptible
def main(argv=None) -> int:
    if common.worker_main(worker, argv):
        return 0
    p = common.model_parser(__doc__.split("\n\n")[0], size_help="crop_size (square)", calls=4)
    p.set_defaults(ngf=32, size=128, warmup=1)
    p.add_argument("--neighbours", nargs="+", type=int, default=[0, 1, 2, 4])
    p.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--name", default="neighbours")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    if args.calls < 1 or args.warmup < 0 or args.rounds < 1 or min(args.neighbours) < 0:
        raise SystemExit("error: --calls and --rounds must be at least 1, --warmup and --neighbours at least 0")
    device = common.default_device()
    base = {**common.model_spec(args, device), "warmup": args.warmup, "calls": args.calls}
    grid = [(n, s) for n in args.neighbours for s in args.settings]
    rounds = []
    bar = common.progress(desc="neighbours", total=len(grid) * args.rounds, unit="cell")
    for _ in range(args.rounds):
        rows = []
        for n, s in grid:
            r = cell(base, n, s)
            bar.update()
            print(f"  {n} neighbours, {SETTINGS[s][0]}: " + (r.get("error") or
                  f"min {r['min_ms']:.0f} ms, median {r['median_ms']:.0f} ms, spread {r['spread']:.0%}, "
                  f"load {r['load_before']:.1f}/{r['load_after']:.1f}"), flush=True)
            rows.append(r)
        rounds.append(rows)
    bar.close()
    rows = add_ratios(fastest(rounds))
    print(common.markdown_table(rows, ["neighbours", "label", "min_ms", "median_ms", "spread", "x_vs_alone",
                                       "speedup_vs_spin", "neighbour_Mloops_per_s", "load_before", "load_after"]))
    if args.no_write:
        return 0
    notes = [f"training step (G step + D step, Trainer.train_step), CelebAMask-HQ config at ngf {args.ngf}, "
             f"{args.size}x{args.size}, batch 1, float32, VGG loss on, {args.threads} threads unless the setting "
             f"says 1; each cell its own process: {args.warmup} warm-up + {args.calls} timed steps"
             + (f", the fastest of {args.rounds} rounds" if args.rounds > 1 else "")
             + f"; a neighbour is a Python busy loop (one thread); {os.cpu_count()} cores"]
    path = common.write_results(args.name, rows, device, notes="\n".join(notes))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
