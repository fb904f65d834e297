"""Checkpoints: atomic writes, the full-resume checkpoint, and the public code's files.

Files in ``<checkpoints_dir>/<name>/``:

* ``latest.pt`` -- everything needed to resume exactly: the three networks, both
  optimisers and grad scalers, the step / epoch / position in the epoch, the
  random-number states, the model configuration and the options. Only tensors and
  plain Python values, so ``torch.load(..., weights_only=True)`` reads it; its
  ``G`` / ``E`` / ``config`` entries are what ``inade-synth`` and ``inade.eval`` load.
* ``latest_net_G.pth``, ``latest_net_D.pth``, ``latest_net_E.pth`` (with the
  encoder) -- plain state dicts with the public code's key names, as its
  ``util.save_network`` writes them (``inade.load_official`` reads the G and E ones).
* ``<epoch>_net_*.pth`` every ``--save_epoch_freq`` epochs, like the public code.

Every file is written to a temporary file in the same folder, flushed to disk,
then renamed over the old one (``os.replace``), so a crash or a full disk during a
save leaves the previous checkpoint intact.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

FORMAT = "inade-train-v1"


def atomic_save(obj, path) -> Path:
    """``torch.save(obj, path)`` that never leaves a half-written ``path`` behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return path


# ---------------------------------------------------------------------------
# Random-number states (as tensors and plain values, loadable with weights_only)
# ---------------------------------------------------------------------------


def rng_state() -> dict:
    """Python, numpy, torch (CPU and every CUDA device) generator states."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


# ---------------------------------------------------------------------------
# Public-format files
# ---------------------------------------------------------------------------


def cpu_state_dict(module: torch.nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def save_public(folder, label: str, G, D, E=None) -> list[Path]:
    """``<label>_net_G.pth``, ``<label>_net_D.pth`` (and ``<label>_net_E.pth``): plain state dicts."""
    folder = Path(folder)
    nets = {"G": G, "D": D, "E": E}
    return [atomic_save(cpu_state_dict(m), folder / f"{label}_net_{k}.pth") for k, m in nets.items() if m is not None]


def load_public(folder, label: str, G, D, E=None, log=print) -> None:
    """Load ``<label>_net_*.pth`` written by the public code (or :func:`save_public`).

    ``G`` and ``E`` go through :func:`inade.load_official` (clear errors on key or
    shape mismatches); the encoder file may also be named ``*_net_IE.pth`` as in
    the public release; ``D`` is optional (a missing file leaves ``D`` as initialised).
    """
    from inade.official import load_official  # noqa: PLC0415

    folder = Path(folder)
    g_file = folder / f"{label}_net_G.pth"
    if not g_file.exists():
        raise FileNotFoundError(f"--continue_train: neither {folder / 'latest.pt'} nor {g_file} exists")
    load_official(G, g_file)
    if E is not None:
        for cand in (folder / f"{label}_net_E.pth", folder / f"{label}_net_IE.pth"):
            if cand.exists():
                load_official(E, cand)
                break
        else:
            log(f"note: no {label}_net_E.pth in {folder}; the encoder starts from scratch")
    d_file = folder / f"{label}_net_D.pth"
    if d_file.exists():
        D.load_state_dict(torch.load(d_file, map_location="cpu", weights_only=True))
    else:
        log(f"note: no {d_file.name} in {folder}; the discriminator starts from scratch")
