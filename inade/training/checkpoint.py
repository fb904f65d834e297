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

Every file is written through :func:`inade.utils.files.atomic_path` (a temporary
file in the same folder, flushed, then renamed over the old one), so a crash or a
full disk during a save leaves the previous checkpoint intact. Every file is read
through :func:`load_checkpoint` (``weights_only``; one clear error for a bad file).
"""
from __future__ import annotations

import pickle
import random
import re
from pathlib import Path

import numpy as np
import torch

from inade.utils.errors import UserError, one_line
from inade.utils.files import atomic_path

FORMAT = "inade-train-v1"


def atomic_save(obj, path) -> Path:
    """``torch.save(obj, path)`` that never leaves a half-written ``path`` behind (:func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
    return Path(path)


def load_checkpoint(path):
    """``torch.load(path, weights_only=True)`` on the CPU, with errors a user can act on.

    Only tensors and plain Python values (and :class:`inade.Config`) are read, so a
    file cannot run code. Every failure is a :class:`UserError` saying what is wrong
    with the file: missing, empty or truncated, not a ``torch.save`` file, or holding
    other Python objects (named).
    """
    from inade.config import Config  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        with torch.serialization.safe_globals([Config]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file: one clear message
        raise UserError(f"{path}: {_what_is_wrong(err)}") from None


def config_differences(saved, cfg) -> list[str]:
    """``["ngf=4 (this run: 8)", ...]``: the model options in which a checkpoint's saved
    ``config`` dict differs from ``cfg`` (an :class:`inade.Config`)."""
    if not isinstance(saved, dict):
        return []
    now = cfg.to_dict()
    return [f"{k}={saved[k]!r} (this run: {now[k]!r})" for k in sorted(saved) if k in now and saved[k] != now[k]]


def _what_is_wrong(err: Exception) -> str:
    """What a ``torch.load(weights_only=True)`` failure says about the file, in our words
    (torch's own text suggests ``weights_only=False``, which would let the file run code)."""
    text = str(err)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return (f"holds a Python object ({found.group(1)}) besides tensors and plain values, so it is not a "
                "checkpoint written by this project or the public code; it is not loaded (loading it could run code)")
    if isinstance(err, EOFError) or "zip archive" in text or "central directory" in text:
        return "not a complete PyTorch checkpoint (empty, truncated or corrupt): save or copy it again"
    if isinstance(err, pickle.UnpicklingError):
        return "not a PyTorch checkpoint (its contents are not what torch.save writes)"
    if isinstance(err, OSError):
        return f"cannot read it ({err.strerror or type(err).__name__})"
    return f"not a readable PyTorch checkpoint ({type(err).__name__})"


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
    _load_into(G, g_file, load_official)
    if E is not None:
        for cand in (folder / f"{label}_net_E.pth", folder / f"{label}_net_IE.pth"):
            if cand.exists():
                _load_into(E, cand, load_official)
                break
        else:
            log(f"note: no {label}_net_E.pth in {folder}; the encoder starts from scratch")
    d_file = folder / f"{label}_net_D.pth"
    if d_file.exists():
        _load_into(D, d_file, lambda m, state: m.load_state_dict(state))
    else:
        log(f"note: no {d_file.name} in {folder}; the discriminator starts from scratch")


def _load_into(module: torch.nn.Module, path: Path, load) -> None:
    """``load(module, state dict of path)``; a file that does not fit is a :class:`UserError` naming it."""
    state = load_checkpoint(path)
    try:
        load(module, state)
    except (ValueError, RuntimeError, KeyError, TypeError, AttributeError) as err:
        raise UserError(f"{path}: does not fit the {type(module).__name__} of this run ({one_line(err)})") from err
