"""Compact instance ids: every instance of an image gets an id in ``0 … L-1``.

INADE's ops index per-instance tables with the instance map, so raw dataset ids
(Cityscapes' ``26001`` = car number 1) must become compact before they reach the
model. An instance must also lie inside one class (it is a sample of that class's
distribution): :func:`compact_ids` therefore numbers the distinct
``(raw id, class)`` pairs when a label map is given, which splits a raw id that
covers several classes (e.g. COCO's id 0 for all stuff) into one instance per class.

That is the one rule for such instances: the data loaders, ``inade-synth`` and
:class:`inade.synthesis.Synthesizer` (through :func:`split_mixed_instances`) all
apply it, so the same files give the same instances everywhere.
"""
from __future__ import annotations

import numpy as np
import torch

CITYSCAPES_INSTANCE_DIVISOR = 1000


def cityscapes_class(raw: np.ndarray | torch.Tensor):
    """Class of each raw Cityscapes instance id: ``id // 1000`` for ``id >= 1000``
    (one object of a thing class), the id itself below (a whole class region)."""
    if isinstance(raw, torch.Tensor):
        return torch.where(raw >= CITYSCAPES_INSTANCE_DIVISOR, raw // CITYSCAPES_INSTANCE_DIVISOR, raw)
    raw = np.asarray(raw)
    return np.where(raw >= CITYSCAPES_INSTANCE_DIVISOR, raw // CITYSCAPES_INSTANCE_DIVISOR, raw)


def compact_ids(inst, label=None):
    """Renumber an instance map to compact ids ``0 … L-1``, one class per instance.

    Ids are numbered in increasing order of ``(raw id, class)``, so a map that is
    already compact and class-pure comes back unchanged.

    Args:
        inst: raw instance ids, integer ``[H, W]`` (numpy array or tensor; any
            leading dimensions are treated as one image).
        label: optional class map of the same shape. With it, pixels sharing a raw id
            but not a class become separate instances.

    Returns:
        ``(ids, classes)``: ``ids`` int64 of ``inst``'s shape and kind (tensor in,
        tensor out), and ``classes`` int64 ``[L]``, the class of each compact id
        (taken from ``label``; without ``label``, the raw id itself).

    Raises:
        TypeError: a float map (ids must be integers).
        ValueError: ``label`` of another shape, or a negative id.
    """
    as_tensor = isinstance(inst, torch.Tensor)
    raw = _as_int_array(inst, "inst")
    if raw.size and raw.min() < 0:
        raise ValueError(f"inst has a negative id ({int(raw.min())}); raw instance ids must be >= 0")
    if label is None:
        uniq, ids = np.unique(raw, return_inverse=True)
        classes = uniq
    else:
        lab = _as_int_array(label, "label")
        if lab.shape != raw.shape:
            raise ValueError(f"label has shape {lab.shape} but inst has {raw.shape}: they must match")
        if lab.size and lab.min() < 0:
            raise ValueError(f"label has a negative class ({int(lab.min())}); classes must be >= 0")
        span = int(lab.max()) + 1 if lab.size else 1
        uniq, ids = np.unique(raw * span + lab, return_inverse=True)  # one key per (raw id, class)
        classes = uniq % span
    ids = ids.reshape(raw.shape).astype(np.int64)
    classes = np.ascontiguousarray(classes, dtype=np.int64)
    if as_tensor:
        return torch.from_numpy(ids).to(inst.device), torch.from_numpy(classes).to(inst.device)
    return ids, classes


def spans_classes(inst: torch.Tensor, label: torch.Tensor) -> bool:
    """Whether an instance of the ``[H, W]`` map ``inst`` covers pixels of several classes of ``label``."""
    span = int(label.max()) + 1 if label.numel() else 1
    return torch.unique(inst.long() * span + label.long()).numel() != torch.unique(inst).numel()


def split_mixed_instances(inst: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Apply the one-class-per-instance rule to a batch ``[B, H, W]`` of instance maps.

    An image in which some instance spans several classes is renumbered with
    :func:`compact_ids` ``(inst, label)`` (one instance per ``(id, class)`` pair, as the
    data loaders do); an image whose instances each lie in one class is returned as
    it is (its ids keep their meaning, gaps included).

    Returns:
        int64 ``[B, H, W]`` on ``inst``'s device (``inst`` itself when nothing was split).
    """
    if inst.shape != label.shape or inst.dim() != 3:
        raise ValueError(f"inst {tuple(inst.shape)} and label {tuple(label.shape)} must both be [B, H, W]")
    mixed = [b for b in range(inst.shape[0]) if spans_classes(inst[b], label[b])]
    if not mixed:
        return inst
    out = inst.long().clone()
    for b in mixed:
        out[b] = compact_ids(inst[b], label[b])[0]
    return out


def _as_int_array(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"{name} must hold integer ids, got dtype {x.dtype}")
    return x.astype(np.int64, copy=False)
