"""Reading and writing weight files so that a damaged or diverged one is never used.

One reader, :func:`load_checkpoint`, serves every program that loads weights
(``train.py --continue_train``, ``inade-synth``, ``python -m inade.test``,
``python -m inade.metrics``, the Studio, :func:`inade.load_official`). It proves
the file before anyone uses it:

1. the zip archive that ``torch.save`` writes stores a CRC-32 of every record
   (each tensor's bytes, the pickle); ``torch.load`` never checks them, so we do
   (:func:`zipfile.ZipFile.testzip`): a flipped byte anywhere is reported, in our
   files and in the public code's alike;
2. ``torch.load(weights_only=True)``: only tensors and plain values, no code runs;
3. every floating-point tensor is finite: a NaN or inf weight, buffer or
   optimiser state is refused, naming the first bad tensor.

The writer, :func:`atomic_save`, refuses to write non-finite tensors and writes
through :func:`inade.utils.files.atomic_path`, so a crash leaves the old file.
Both :mod:`inade.official` and :mod:`inade.training.checkpoint` import this
module, which imports neither of them.
"""
from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from inade.utils.errors import UserError
from inade.utils.files import atomic_path


def load_checkpoint(path):
    """``torch.load(path, weights_only=True)`` on the CPU, after proving the file intact.

    Only tensors and plain Python values (and :class:`inade.Config`) are read, so a
    file cannot run code. Every failure is a :class:`UserError` naming the file:
    missing, empty or truncated, damaged (a record's CRC-32 does not match its
    bytes), not a ``torch.save`` file, holding other Python objects (named), or
    holding a tensor with NaN or inf values (its key named).
    """
    from inade.config import Config  # noqa: PLC0415 - the models' package imports this module

    path = Path(path)
    if not path.is_file():
        what = ("a folder, not a checkpoint file" if path.is_dir() else
                "not a regular file (a device, pipe or socket)" if path.exists() else "no such file")
        raise UserError(f"{path}: {what}")
    damaged = damaged_record(path)
    if damaged is not None:
        raise UserError(f"{path}: damaged: the checksum (CRC-32) of its record {damaged} does not match its bytes "
                        "(the file changed after it was written); use a backup or an earlier checkpoint")
    try:
        with torch.serialization.safe_globals([Config]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file: one clear message
        raise UserError(f"{path}: {_what_is_wrong(err)}") from None
    bad = first_non_finite(obj)
    if bad is not None:
        raise UserError(f"{path}: tensor {bad} holds NaN or inf values, so these weights are unusable "
                        "(saved from a diverged run?); use an earlier checkpoint")
    return obj


def damaged_record(path) -> str | None:
    """The name of the first record of ``path``'s zip archive that fails to read back with
    its CRC-32 (or whose header is broken), else ``None``.

    What :meth:`zipfile.ZipFile.testzip` does, but any failure of a record counts (a
    flipped byte in a record's header can raise other errors than ``BadZipFile``). A file
    that is not a zip archive (the legacy ``torch.save`` format, garbage, a truncated
    file whose directory is gone) has no checksums to check: ``None``, and ``torch.load``
    decides."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
        return None
    with archive:
        for info in archive.infolist():
            try:
                with archive.open(info) as record:
                    while record.read(1 << 22):
                        pass
            except Exception:  # noqa: BLE001 - every way a record fails to read back means the same
                return info.filename
    return None


def first_non_finite(obj, prefix: str = "") -> str | None:
    """The key path (``G.conv_img.weight``, ``opt_G.state.3.exp_avg``) of the first
    floating-point tensor in ``obj`` (nested dicts, lists, tuples) holding NaN or inf."""
    if isinstance(obj, torch.Tensor):
        if obj.is_meta or not (obj.is_floating_point() or obj.is_complex()):  # meta: shapes, no values
            return None
        # One pass without a temporary: a sum is finite iff every element is (a NaN or inf
        # cannot cancel); only an overflowing sum needs the exact, allocating check.
        if not bool(torch.isfinite(obj.sum())) and not bool(torch.isfinite(obj).all()):
            return prefix or "(the file's only tensor)"
        return None
    if isinstance(obj, Mapping):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for key, value in items:
        bad = first_non_finite(value, f"{prefix}.{key}" if prefix else str(key))
        if bad is not None:
            return bad
    return None


def atomic_save(obj, path, *, checked: bool = False) -> Path:
    """``torch.save(obj, path)`` that never leaves a half-written ``path`` behind (:func:`atomic_path`)
    and never writes a NaN or inf tensor: then it raises :class:`UserError` naming the tensor and
    leaves ``path`` as it was. ``checked``: the caller has just found ``obj`` finite with
    :func:`first_non_finite` (to refuse a set of files as one), so it is not scanned again."""
    bad = None if checked else first_non_finite(obj)
    if bad is not None:
        raise UserError(f"{path}: not written: tensor {bad} holds NaN or inf values; the file on disk is unchanged")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
    return Path(path)


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
