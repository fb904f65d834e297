"""What the training logs cost: ``loss_log.txt``, ``metrics.jsonl``, TensorBoard (``--tf_log``),
``curves.png`` and ``web/index.html`` against the training step of the ``make train`` run.

    python -m bench.bench_logging [--steps 5] [--records 30]

The trainer of the default run (synthetic preset, 64×64, batch 8, the VGG loss off as
without its weights file) is built in a temporary folder; then, medians of repeated calls:

* a training step (``Trainer.train_step``);
* ``Trainer.log_step`` on a step with nothing due (the per-step check), and on a
  ``--print_freq`` step (the mean over processes, the line, the JSON record, the scalars);
* the log's share of a ``--display_freq`` step (the grid into TensorBoard and the page;
  the grid itself was drawn before the logs existed and is not counted);
* the log's share of a save (sync, ``curves.png`` with the run's records, the page);
* once per run: the TensorBoard writer and matplotlib's import (measured in fresh processes).

The overhead of the default run is the sum of these times the number of times the run does
each (its frequencies), over its steps times the median step. Writes
``bench/results/cpu-2core/training_logs.json`` with the load average (a shared machine:
both sides are measured in the same process, one after the other).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from bench.common import load_note, sample_stats, time_calls, write_results

ONCE = {
    "TensorBoard writer (--tf_log)": "from torch.utils.tensorboard import SummaryWriter; import tempfile; "
                                     "SummaryWriter(tempfile.mkdtemp(), purge_step=1).close()",
    "matplotlib import (first curves.png)": "from matplotlib.backends.backend_agg import FigureCanvasAgg; "
                                            "from matplotlib.figure import Figure",
}


def once_seconds(code: str, repeats: int = 3) -> float:
    """Median extra seconds of ``code`` in a fresh interpreter (over one that imports torch only)."""
    def run(body):
        t = subprocess.run([sys.executable, "-c", f"import time, torch; t = time.perf_counter(); {body}; "
                            "print(time.perf_counter() - t)"], capture_output=True, text=True, check=True)
        return float(t.stdout.split()[-1])
    return statistics.median(run(code) for _ in range(repeats))


def counts(tr) -> dict:
    """How many log lines, grids and saves the run does (its frequencies, counted in images)."""
    gb, o = tr.opt.batchSize, tr.opt

    def crossed(s, freq):
        return (s * gb) // freq > ((s - 1) * gb) // freq

    steps = range(1, tr.total_steps + 1)
    return {"steps": tr.total_steps,
            "log lines": sum(crossed(s, o.print_freq) or s == tr.total_steps for s in steps),
            "grids": sum(crossed(s, o.display_freq) for s in steps) + (not crossed(tr.total_steps, o.display_freq)),
            "saves": sum(crossed(s, o.save_latest_freq) and s < tr.total_steps for s in steps) + 1}


def measure(args) -> tuple[list[dict], dict]:
    from inade.training.options import parse_options  # noqa: PLC0415
    from inade.training.trainer import Trainer  # noqa: PLC0415

    folder = tempfile.mkdtemp(prefix="inade-bench-logs-")
    opt, cfg, _ = parse_options(["--checkpoints_dir", folder, "--name", "run", "--no_vgg_loss", "--tf_log",
                                 "--no_progress", "--gpu_ids", "-1"])
    tr = Trainer(opt, cfg, log=lambda *a: None)
    tr.prepare_folder()
    tr.logs.start(0)
    batch = next(iter(tr.loader))
    rows = []

    def row(what, seconds, per_run):
        st = sample_stats(seconds)
        rows.append({"what": what, **st, "per_run": per_run})
        return st["median_ms"] / 1e3

    step_s = row("training step (train_step)", time_calls(lambda: tr.train_step(batch), warmup=1, calls=args.steps), None)
    losses = tr.train_step(batch)
    n = counts(tr)
    g = opt.batchSize

    def at(step):
        def set_step():
            tr.step = step
        return set_step

    due = next(s for s in range(1, tr.total_steps) if (s * g) // opt.print_freq > ((s - 1) * g) // opt.print_freq)
    idle = row("log_step, nothing due", time_calls(lambda: tr.log_step(losses), warmup=10, calls=200,
                                                   setup=at(due + 1)), n["steps"] - n["log lines"])
    line = row("log_step at --print_freq (line, JSON, scalars)",
               time_calls(lambda: tr.log_step(losses), warmup=2, calls=args.records, setup=at(due)), n["log lines"])
    grid = tr.write_grid()  # the grid itself (not a log cost); then the log's share
    shown = row("logs.grid at --display_freq (TensorBoard image, page)",
                time_calls(lambda: tr.logs.grid(tr.step, grid), warmup=1, calls=10), n["grids"])
    tr.logs.records = [dict(tr.logs.records[-1], step=k + 1) for k in range(n["log lines"])]  # the run's, at its end
    saved = row(f"logs.save at a checkpoint (sync, curves.png of {len(tr.logs.records)} records, page)",
                time_calls(lambda: tr.logs.save(tr.step), warmup=1, calls=5), n["saves"])
    once = {what: once_seconds(code) for what, code in ONCE.items()}
    for what, s in once.items():
        rows.append({"what": what, "n": 3, "median_ms": s * 1e3, "per_run": 1})
    tr.logs.close()
    train_s = n["steps"] * step_s
    logs_s = idle * (n["steps"] - n["log lines"]) + line * n["log lines"] + shown * n["grids"] + saved * n["saves"]
    summary = {"run": "make train (synthetic preset, batch 8, 64x64, 768 steps), --tf_log on", **n,
               "training_s": train_s, "logging_s": logs_s, "once_s": sum(once.values()),
               "overhead": logs_s / train_s, "overhead_with_once": (logs_s + sum(once.values())) / train_s,
               "per_step_ms": 1e3 * logs_s / n["steps"]}
    return rows, summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=5, help="timed training steps (after one warm-up)")
    p.add_argument("--records", type=int, default=30, help="timed log lines")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    before = time.strftime("%H:%M:%S")
    rows, summary = measure(args)
    device = torch.device("cpu")
    notes = (f"started {before}; the default synthetic run's trainer (VGG loss off), {torch.get_num_threads()} threads; "
             + load_note())
    path = write_results("training_logs", rows, device, notes=notes, summary=summary)
    for r in rows:
        print(f"{r['what']:<70} {r['median_ms']:11.4f} ms  x{r['per_run']}")
    print(f"default run: logging {summary['logging_s']:.2f} s over {summary['training_s']:.0f} s of training = "
          f"{100 * summary['overhead']:.2f} % ({100 * summary['overhead_with_once']:.2f} % with the one-time "
          f"{summary['once_s']:.2f} s); {summary['per_step_ms']:.3f} ms a step -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
