"""Compact instance ids: every instance of an image gets an id in ``0 … L-1``.

INADE's ops index per-instance tables with the instance map, so raw dataset ids
(Cityscapes' ``26001`` = car number 1) must become compact before they reach the
model. :func:`compact_ids` numbers the distinct raw ids in increasing order and
nothing else: two pixels are one instance exactly when their raw ids are equal,
as in the authors' public code (its one-hot instance map has one channel per raw id).

A raw id may cover pixels of several classes (COCO-Stuff's instance maps keep the
label value as id for stuff and number the objects 0, 1, 2 …, so id 0 can be both a
person and the sky). The public code gives such an id one noise row and one encoder
pooling region and takes the class parameters pixel by pixel; so do the generator
(:func:`inade.nn.instance_parts`), the encoder, the data loaders, ``inade-synth``,
:class:`inade.synthesis.Synthesizer` and the studio. :func:`spanning_ids` finds such ids
(the loaders print a one-line note the first time a data set holds one).
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


def compact_ids(inst):
    """Renumber an instance map to compact ids ``0 … L-1``, one per distinct raw id.

    Ids are numbered in increasing order of the raw id, so a map that is already
    compact comes back unchanged. An id that spans several classes stays one instance
    (the public code's meaning; see the module docstring).

    Args:
        inst: raw instance ids, integer ``[H, W]`` (numpy array or tensor; any
            leading dimensions are treated as one image).

    Returns:
        ``(ids, raw)``: ``ids`` int64 of ``inst``'s shape and kind (tensor in, tensor out),
        and ``raw`` int64 ``[L]``, the raw id of each compact id.

    Raises:
        TypeError: a float map (ids must be integers).
        ValueError: a negative id.
    """
    as_tensor = isinstance(inst, torch.Tensor)
    raw = _as_int_array(inst, "inst")
    if raw.size and raw.min() < 0:
        raise ValueError(f"inst has a negative id ({int(raw.min())}); raw instance ids must be >= 0")
    uniq, ids = np.unique(raw, return_inverse=True)
    ids = ids.reshape(raw.shape).astype(np.int64)
    uniq = np.ascontiguousarray(uniq, dtype=np.int64)
    if as_tensor:
        return torch.from_numpy(ids).to(inst.device), torch.from_numpy(uniq).to(inst.device)
    return ids, uniq


def spanning_ids(inst, label) -> dict[int, list[int]]:
    """The ids of ``inst`` that cover pixels of several classes of ``label``: ``{id: [classes]}``
    (empty when every id lies in one class). ``inst`` and ``label``: integer maps of one shape
    (numpy arrays or tensors)."""
    ids, lab = _as_int_array(inst, "inst"), _as_int_array(label, "label")
    if ids.shape != lab.shape:
        raise ValueError(f"label has shape {lab.shape} but inst has {ids.shape}: they must match")
    if not lab.size:
        return {}
    span = int(lab.max()) + 1
    pairs = np.unique(ids.ravel() * span + lab.ravel())
    owner = pairs // span
    if np.unique(owner).size == owner.size:
        return {}
    out: dict[int, list[int]] = {}
    for i, c in zip(owner.tolist(), (pairs % span).tolist()):
        out.setdefault(i, []).append(c)
    return {i: c for i, c in out.items() if len(c) > 1}


def spans_classes(inst, label) -> bool:
    """Whether an id of the map ``inst`` covers pixels of several classes of ``label``."""
    return bool(spanning_ids(inst, label))


def _as_int_array(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"{name} must hold integer ids, got dtype {x.dtype}")
    return x.astype(np.int64, copy=False)
