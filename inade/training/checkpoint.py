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

Every file is written through :func:`atomic_save` (a temporary file in the same
folder, flushed, then renamed over the old one; a NaN or inf tensor is refused
before anything is written), so a crash or a full disk during a save leaves the
previous checkpoint intact; the temporary files of a save cut short by ``kill -9``
(``.<name>.XXXXXXXX.tmp``) are removed by the next run (:func:`remove_orphan_temporaries`).
Every file is read through :func:`load_checkpoint` (:mod:`inade.utils.checkpoint_io`:
the zip records' CRC-32 checked, ``weights_only``, every tensor finite; one clear
error for a bad file).
"""
from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import torch

from inade.official import load_official
from inade.utils.checkpoint_io import atomic_save, first_non_finite, load_checkpoint
from inade.utils.errors import UserError, one_line

FORMAT = "inade-train-v1"


def config_differences(saved, cfg) -> list[str]:
    """``["ngf=4 (this run: 8)", ...]``: the model options in which a checkpoint's saved
    ``config`` dict differs from ``cfg`` (an :class:`inade.Config`)."""
    if not isinstance(saved, dict):
        return []
    now = cfg.to_dict()
    return [f"{k}={saved[k]!r} (this run: {now[k]!r})" for k in sorted(saved) if k in now and saved[k] != now[k]]


# The names atomic_path's mkstemp gives its temporary files: "." + the file's name + "." +
# 8 characters of tempfile's alphabet + ".tmp".
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")


def remove_orphan_temporaries(folder) -> list[Path]:
    """Delete the temporary files that a save killed mid-way left in ``folder``, its
    ``samples/`` and ``web/`` (only names of :func:`inade.utils.files.atomic_path`'s pattern); returns them.
    Call it only while no save is running in ``folder``."""
    folder = Path(folder)
    removed = []
    for where in (folder, folder / "samples", folder / "web"):
        if not where.is_dir():
            continue
        for p in sorted(where.iterdir()):
            if _TEMPORARY.match(p.name) and p.is_file() and not p.is_symlink():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def existing_checkpoints(folder) -> list[Path]:
    """The trained models in ``folder``: ``latest.pt``, ``best.pt`` and every ``*_net_G.pth``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [folder / n for n in ("latest.pt", "best.pt") if (folder / n).is_file()]
    return found + sorted(folder.glob("*_net_G.pth"))


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
    states = {k: cpu_state_dict(m) for k, m in {"G": G, "D": D, "E": E}.items() if m is not None}
    bad = first_non_finite(states)
    if bad is not None:  # all files or none: a set of G, D and E from one moment
        raise UserError(f"{folder / f'{label}_net_*.pth'}: not written: tensor {bad} holds NaN or inf values")
    return [atomic_save(state, folder / f"{label}_net_{k}.pth", checked=True) for k, state in states.items()]


def load_public(folder, label: str, G, D, E=None, log=print) -> None:
    """Load ``<label>_net_*.pth`` written by the public code (or :func:`save_public`).

    ``G`` and ``E`` go through :func:`inade.load_official` (clear errors on key or
    shape mismatches); the encoder file may also be named ``*_net_IE.pth`` as in
    the public release; ``D`` is optional (a missing file leaves ``D`` as initialised).
    """
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
