"""Ctrl-C (SIGINT) and SIGTERM in every program a user starts: one line, exit status 130 / 143
(128 + the signal, as a shell reports it), no traceback, nothing half-written.

Each program runs as ``python -m …`` does (``runpy``, its own ``__main__`` block) in a subprocess,
with one function of its work wrapped so that the process sends itself the signal at that point:
a real signal, delivered while the program is busy, at a moment that does not depend on timing.
The Studio is started as a user starts it and signalled while it serves.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import inade
from _cli import ROOT, save_generator_checkpoint
from inade.metrics import results
from inade.test import main as inade_test_main
from inade.utils.checkpoint_io import load_checkpoint
from test_train import TINY

CFG = inade.config("synthetic", ngf=4, noise_nc=4, z_dim=8, crop_size=32)

# Runs ENTRY (a module, or a path to run as __main__) with ARGV; the NTH call of TARGET ("module:attr",
# attr may be "Class.method") first sends this process SIGNUM, then does its work.
RUNNER = """
import importlib, os, runpy, signal, sys
entry, target, nth, signum, argv = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:]
module_name, attr = target.split(":")
owner = importlib.import_module(module_name)
*path, name = attr.split(".")
for part in path:
    owner = getattr(owner, part)
real, calls = getattr(owner, name), []
def wrapped(*args, **kwargs):
    calls.append(1)
    if len(calls) == nth:  # the whole process group (data workers too) when asked, as Slurm or systemd do
        os.killpg(os.getpgrp(), signum) if os.environ.get("KILL_GROUP") else os.kill(os.getpid(), signum)
    return real(*args, **kwargs)
setattr(owner, name, wrapped)
sys.argv = [entry, *argv]
if entry.endswith(".py"):
    runpy.run_path(entry, run_name="__main__")
else:
    runpy.run_module(entry, run_name="__main__", alter_sys=True)
"""


def _as_at_a_terminal() -> None:
    """Ctrl-C's default disposition in the child, as a program started at a terminal has it: a
    shell starts background jobs (``cmd &``, a CI runner's) with SIGINT ignored, which survives
    ``exec`` and makes Python install no KeyboardInterrupt handler at all."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run(entry: str, target: str, nth: int, sig: signal.Signals, argv: list[str], cwd,
         group: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **({"KILL_GROUP": "1"} if group else {})}
    return subprocess.run([sys.executable, "-c", RUNNER, entry, target, str(nth), str(int(sig)), *map(str, argv)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300, start_new_session=True,
                          preexec_fn=_as_at_a_terminal)


def _assert_interrupted(proc: subprocess.CompletedProcess, sig: signal.Signals) -> str:
    """Exit 128 + sig, no traceback, one line saying it was interrupted; returns stderr."""
    err = proc.stderr
    assert proc.returncode == 128 + sig, f"exit {proc.returncode}:\n{err}"
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    said = [line for line in err.splitlines() if sig.name in line]
    assert len(said) == 1, err
    return err


def _temporaries(folder) -> list[str]:
    return sorted(str(p) for p in folder.rglob(".*.tmp")) + sorted(str(p) for p in folder.rglob(".*.lock"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A checkpoint, a label map of the model's size, and complete results of python -m inade.test."""
    d = tmp_path_factory.mktemp("interrupts")
    save_generator_checkpoint(d / "exp" / "latest.pt", CFG)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(d / "label.png")
    assert inade_test_main(["--name", "exp", "--checkpoints_dir", str(d), "--results_dir", str(d / "res"),
                            "--synthetic_size", "6", "--no_progress"]) == 0
    return d


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_inade_test(files, tmp_path, sig):
    out = files / "res" / "exp" / "test_latest"
    before = results.file_table(out)
    argv = ["--name", "exp", "--checkpoints_dir", files, "--results_dir", files / "res", "--synthetic_size", "6",
            "--samples", "2", "--no_progress"]
    _assert_interrupted(_run("inade.test", "inade.data:write_image", 3, sig, argv, tmp_path), sig)
    assert results.file_table(out) == before and _temporaries(out.parent) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_train_py_saves_then_exits_130_or_143(tmp_path, sig):
    """The first signal stops the loop after the step; the save is complete; exit 128 + the signal."""
    argv = [*TINY, "--checkpoints_dir", tmp_path, "--name", "run", "--no_vgg_loss", "--display_freq", "1000"]
    proc = _run(str(ROOT / "train.py"), "inade.training.trainer:Trainer.train_step", 2, sig, argv, tmp_path)
    err = _assert_interrupted(proc, sig)
    assert "interrupted at step 2/" in err, err
    assert int(load_checkpoint(tmp_path / "run" / "latest.pt")["step"]) == 2
    assert _temporaries(tmp_path) == []


def test_train_py_with_data_workers_stops_on_sigterm_to_the_process_group(tmp_path):
    """SIGTERM to every process of the job (Slurm, systemd, kill -- -PGID): the data workers ignore it and
    the main process stops after the step and saves (a killed worker was a DataLoader traceback)."""
    argv = [*TINY, "--checkpoints_dir", tmp_path, "--name", "run", "--no_vgg_loss", "--display_freq", "1000",
            "--nThreads", "1"]
    proc = _run(str(ROOT / "train.py"), "inade.training.trainer:Trainer.train_step", 2, signal.SIGTERM, argv, tmp_path,
                group=True)
    _assert_interrupted(proc, signal.SIGTERM)
    assert int(load_checkpoint(tmp_path / "run" / "latest.pt")["step"]) == 2
    # whether a worker's death is noticed mid-step is a race; that the workers outlive the signal is not:
    code = "import os, signal\nfrom inade.training.trainer import _ignore_stop_signals\n_ignore_stop_signals(0)\n" \
           "os.kill(os.getpid(), signal.SIGTERM)\nos.kill(os.getpid(), signal.SIGINT)\nprint('alive')"
    worker = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=120)
    assert (worker.returncode, worker.stdout.strip()) == (0, "alive"), worker.stderr


def test_train_py_signal_inside_a_save_keeps_the_previous_checkpoint(tmp_path):
    """SIGTERM while latest.pt is being written (its bytes written, not yet renamed): the previous
    latest.pt stays, the temporary file is removed, one line, exit 143."""
    argv = [*TINY, "--checkpoints_dir", tmp_path, "--name", "run", "--no_vgg_loss", "--display_freq", "1000",
            "--save_latest_freq", "2", "--max_steps", "2"]
    # saves after step 1 (four torch.save calls: latest.pt, G, D, E) and the last one after the loop,
    # where a signal no longer means "stop after this step": the signal in the last save's first call
    proc = _run(str(ROOT / "train.py"), "torch:save", 5, signal.SIGTERM, argv, tmp_path)
    _assert_interrupted(proc, signal.SIGTERM)
    assert int(load_checkpoint(tmp_path / "run" / "latest.pt")["step"]) == 1
    assert _temporaries(tmp_path) == []


def test_inade_synth(files, tmp_path):
    out = tmp_path / "a.png"
    argv = ["random", "--checkpoint", files / "exp" / "latest.pt", "--label", files / "label.png", "--out", out,
            "--save-latents", tmp_path / "a.pt"]
    _assert_interrupted(_run("inade.cli", "inade.data.images:save_image", 1, signal.SIGINT, argv, tmp_path), signal.SIGINT)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_inade_metrics(files, tmp_path):
    out = files / "res" / "exp" / "test_latest"
    before = sorted(p.name for p in out.iterdir())
    argv = ["all", out, "--no_generator"]
    proc = _run("inade.metrics", "inade.metrics.results:verify", 1, signal.SIGTERM, argv, tmp_path)
    _assert_interrupted(proc, signal.SIGTERM)
    assert sorted(p.name for p in out.iterdir()) == before  # no metrics.json / .md, no temporary


def test_inade_data_prepare(tmp_path):
    argv = [tmp_path, "--dataset", "cityscapes"]
    target = "inade.utils.arguments:ArgumentParser.parse_args"  # (its work is in its own __main__ module)
    proc = _run("inade.data.prepare", target, 1, signal.SIGINT, argv, tmp_path)
    _assert_interrupted(proc, signal.SIGINT)


def test_bench(tmp_path):
    proc = _run("bench", "subprocess:call", 1, signal.SIGTERM, ["--only", "peaks"], tmp_path)
    _assert_interrupted(proc, signal.SIGTERM)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_studio(files, tmp_path, sig):
    pytest.importorskip("uvicorn")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "inade.studio", "--checkpoint", str(files / "exp" / "latest.pt"),
                             "--port", "0"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_as_at_a_terminal)
    try:
        line = proc.stdout.readline()  # printed once it listens
        assert "INADE Studio" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _assert_interrupted(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), sig)

