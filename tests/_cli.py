"""Running a command-line entry point as a user would, and checking its user errors.

Every entry point reports a user error as exactly one line ``error: …`` on stderr and
exits with code 2, with no traceback (``inade.utils.errors``). The table-driven CLI
tests of each area call :func:`assert_user_error` on a subprocess run.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(args: list[str], *, cwd=None, timeout: float = 300, env: dict | None = None,
            input: bytes | None = None) -> subprocess.CompletedProcess:
    """``python <args>`` in a subprocess (the repository on ``PYTHONPATH``, one thread), text output;
    it runs in ``cwd``, by default the test's own working folder (never the repository)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd or os.getcwd(), env=full_env, capture_output=True,
                          timeout=timeout, input=input)


def assert_user_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Assert ``proc`` failed as a user error: exit 2, stderr one ``error:`` line, no traceback,
    and the line contains every one of ``needles`` (the option or file it must name).
    Returns the line."""
    err = proc.stderr.decode(errors="replace") if isinstance(proc.stderr, bytes) else proc.stderr
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, f"exit {proc.returncode}, stderr:\n{err}"
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"expected one error line, got:\n{err}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def save_generator_checkpoint(path: Path, cfg) -> Path:
    """A checkpoint holding only a generator of ``cfg`` (seed 0) at ``path``, as the entry points
    load it (``G``, ``config``, ``options``); the fixtures of the CLI tests start from it."""
    import torch  # noqa: PLC0415

    import inade  # noqa: PLC0415

    torch.manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"G": inade.Generator(cfg).state_dict(), "config": cfg.to_dict(), "options": {"seed": 0}}, path)
    return path
