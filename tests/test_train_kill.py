"""``kill -9`` of train.py at random moments, one of them inside a save, each followed by
``--continue_train``: every file on disk stays readable, the run resumes where its last
save left it, and after the last run no temporary file is left and the files agree."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from test_train import TINY

from inade.training.trainer import main as train_main
from inade.utils.checkpoint_io import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
STEPS = 12  # 3 epochs of 4 steps


def _argv(tmp_path: Path, resume: bool, *extra: str) -> list[str]:
    return [*TINY, "--checkpoints_dir", str(tmp_path), "--name", "run", "--niter", "2", "--niter_decay", "1",
            "--save_latest_freq", "2", "--display_freq", "6", "--no_vgg_loss",
            *(["--continue_train"] if resume else []), *extra]


def _start(tmp_path: Path, resume: bool, log: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, str(ROOT / "train.py"), *_argv(tmp_path, resume, *extra)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=open(log, "wb"))  # noqa: SIM115


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*.tmp"))


def _wait_for_a_save(proc: subprocess.Popen, latest: Path, after_ns: int, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if latest.exists() and latest.stat().st_mtime_ns > after_ns:
            return
        time.sleep(0.005)
    raise AssertionError(f"no save within {timeout} s (exit {proc.poll()})")


def _kill_inside_a_save(proc: subprocess.Popen, folder: Path, timeout: float = 30) -> None:
    """SIGKILL as soon as a temporary file of a save appears."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if any(e.name.endswith(".tmp") for e in os.scandir(folder)):
            break
    proc.send_signal(signal.SIGKILL)


def _all_files_readable(folder: Path) -> int:
    """Every checkpoint file loads through the checking reader; returns latest.pt's step."""
    for p in sorted(folder.glob("*.pt*")):
        if not p.name.startswith("."):  # a killed save's temporary file is not one of them
            load_checkpoint(p)  # raises on a half-written, damaged or NaN file
    for p in folder.glob("samples/[!.]*.png"):
        Image.open(p).verify()
    return int(load_checkpoint(folder / "latest.pt")["step"])


def test_kill_9_at_random_moments_then_continue_train(tmp_path):
    folder, rng = tmp_path / "run", random.Random(18)
    latest = folder / "latest.pt"
    saved_step, logs = 0, []
    for i, how in enumerate(["inside a save", "at random", "at random"]):
        logs.append(tmp_path / f"log{i}.txt")
        before = latest.stat().st_mtime_ns if latest.exists() else 0
        proc = _start(tmp_path, resume=i > 0, log=logs[-1])
        _wait_for_a_save(proc, latest, before)
        if how == "inside a save":
            _kill_inside_a_save(proc, folder)
        else:
            time.sleep(rng.uniform(0.0, 0.5))
            proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL, f"run {i} ended before the kill: {logs[-1].read_text()}"
        step = _all_files_readable(folder)
        assert saved_step < step < STEPS, (saved_step, step)
        if i > 0:
            assert f"resumed from {latest} at step {saved_step}" in logs[-1].read_text()
        saved_step = step

    log = tmp_path / "final.txt"
    proc = _start(tmp_path, resume=True, log=log)
    assert proc.wait(timeout=120) == 0, log.read_text()
    assert f"resumed from {latest} at step {saved_step}" in log.read_text()
    assert _all_files_readable(folder) == STEPS
    assert _temporaries(folder) == [], "the temporary files of the killed saves are removed"
    state = load_checkpoint(latest)
    for net in ("G", "D", "E"):
        public = load_checkpoint(folder / f"latest_net_{net}.pth")
        assert public.keys() == state[net].keys() and all(torch.equal(public[k], state[net][k]) for k in public), net


def test_a_second_writer_stops_naming_the_first_and_kill_9_frees_the_folder(tmp_path, capsys):
    """Two train.py into one experiment (--continue_train or not): the second stops with one line naming
    the running one's pid and writes nothing; after kill -9 of the first (the kernel drops its lock, the
    lock file stays behind) --continue_train runs to the end."""
    folder = tmp_path / "run"
    log = tmp_path / "first.txt"
    first = _start(tmp_path, False, log, "--niter", "1000")  # runs until it is killed
    try:
        _wait_for_a_save(first, folder / "latest.pt", 0)
        for resume in (True, False):  # in this process: another process than the first
            code = train_main(_argv(tmp_path, resume))
            err = capsys.readouterr().err
            assert code == 2, err
            lines = [line for line in err.splitlines() if line.startswith("error:")]
            assert len(lines) == 1 and "Traceback" not in err, err
            assert f"pid {first.pid}" in lines[0] and "train.py" in lines[0] and str(folder) in lines[0], lines
            assert "resumed" not in err and "INADE on" not in err, err  # stopped before any work
            assert first.poll() is None, "the first run goes on"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    step = _all_files_readable(folder)
    assert train_main(_argv(tmp_path, True, "--niter", "1000", "--max_steps", str(step + 1))) == 0
    assert f"resumed from {folder / 'latest.pt'} at step {step}" in capsys.readouterr().err
    assert not (folder / ".train.lock").exists() and _temporaries(folder) == []
