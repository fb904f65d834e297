"""Index-map helpers: nearest resizing of label/instance maps and the class of
each instance. The generator computes both once per forward and shares them
with every norm layer."""
from __future__ import annotations

import torch

from inade.ops import _checks


def _nearest_source_index(in_size: int, out_size: int, device) -> torch.Tensor:
    """Source index of each output position, exactly as ``F.interpolate(mode="nearest")`` computes it
    (``floor(dst · (in/out))`` in float32, clamped; exact halving/identity shortcuts agree)."""
    scale = torch.tensor(in_size, dtype=torch.float32) / out_size
    idx = (torch.arange(out_size, dtype=torch.float32) * scale).floor().to(torch.long)
    return idx.clamp_(max=in_size - 1).to(device)


def resize_index_map(index: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of an integer map ``[B, H, W]`` to ``[B, h, w]``.

    Bit-identical to ``F.interpolate(index[:, None].float(), size, mode="nearest")[:, 0]``
    (for ids below 2**24, where float32 is exact), without the float round trip.
    """
    _checks.check_tensor(index, "index")
    if index.dim() != 3:
        raise ValueError(f"index must be [B, H, W], got shape {tuple(index.shape)}")
    h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive, got {size}")
    H, W = index.shape[1:]
    if (h, w) == (H, W):
        return index
    rows = _nearest_source_index(H, h, index.device)
    cols = _nearest_source_index(W, w, index.device)
    return index.index_select(1, rows).index_select(2, cols)


class IndexPyramid:
    """An index map resized once per resolution and shared by every layer of a forward.

    Each size is taken from the full-resolution map with nearest resampling (the
    public code's ``F.interpolate(…, mode='nearest')`` of its one-hot maps), never
    from another resized level.
    """

    def __init__(self, index: torch.Tensor):
        self.full = index
        self._levels: dict[tuple[int, int], torch.Tensor] = {tuple(index.shape[-2:]): index}

    def at(self, size) -> torch.Tensor:
        """``[B, h, w]`` map at ``size = (h, w)``."""
        size = (int(size[0]), int(size[1]))
        if size not in self._levels:
            self._levels[size] = resize_index_map(self.full, size)
        return self._levels[size]


def check_integer_map(t, name: str) -> None:
    """Raise a clear ``TypeError``/``ValueError`` unless ``t`` is an integer map ``[B, H, W]``.

    Only the type, dtype and rank are checked (no value is read), so this is free
    under ``torch.compile``.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer map [B, H, W], got dtype {t.dtype}")
    if t.dim() != 3:
        raise ValueError(f"{name} must be [B, H, W], got shape {tuple(t.shape)}")


def instance_classes(label: torch.Tensor, inst: torch.Tensor, num_instances: int | None = None, *,
                     num_classes: int | None = None, exact: bool = False, hint: str = "") -> torch.Tensor:
    """The class of every instance: ``cls[b, l]`` = the label of instance ``l``'s pixels in image ``b``.

    All checks that read values run inside the custom op ``inade::instance_classes``, so
    ``torch.compile(fullgraph=True)`` traces a model that calls this without a graph break.

    Args:
        label: ``[B, H, W]`` integer class map.
        inst: ``[B, H, W]`` integer compact instance ids (``0 … L-1``).
        num_instances: ``L``; default ``inst.max() + 1`` over the batch.
        num_classes: when given, every label must lie in ``[0, num_classes)``.
        exact: ``L`` must equal ``inst.max() + 1`` (no table rows past the map's ids).
        hint: appended to the label-range error (what to change to fit the model).

    Returns:
        ``[B, L]`` int64; 0 for an instance with no pixels in that image (its row is never read).

    Raises:
        ValueError: a label outside ``[0, num_classes)``, an id outside ``[0, L)``, more
            rows than ids with ``exact``, or an instance spanning two classes (this table has
            one class per instance; :func:`instance_parts` handles such ids), naming the image,
            instance and classes.
    """
    num_instances = _checked_maps(label, inst, num_instances)
    return _instance_classes(label, inst, num_instances, -1 if num_classes is None else num_classes, exact, hint)


def _check_labels(label: torch.Tensor, num_classes: int, hint: str) -> None:
    if num_classes < 0 or label.numel() == 0:
        return
    lo, hi = (int(v) for v in torch.aminmax(label))
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"label has classes in [{lo}, {hi}] but the model has num_classes={num_classes}{hint}")


def _check_rows(inst: torch.Tensor, num_instances: int) -> None:
    used = int(inst.max()) + 1 if inst.numel() else 0
    if num_instances > used:
        raise ValueError(
            f"the noise has {num_instances} instance rows but inst has ids 0 ... {used - 1} ({used} instances): "
            f"pass noise[:, :{used}] (rows are the instance ids of the map)"
        )


@torch.library.custom_op("inade::instance_classes", mutates_args=())
def _instance_classes(label: torch.Tensor, inst: torch.Tensor, num_instances: int, num_classes: int, exact: bool,
                      hint: str) -> torch.Tensor:
    """Body of :func:`instance_classes` (runs on real values, also under ``torch.compile``)."""
    _check_labels(label, num_classes, hint)
    _checks.check_ids_in_range(inst, num_instances)
    if exact:
        _check_rows(inst, num_instances)
    B = label.shape[0]
    flat_inst, flat_label = inst.reshape(B, -1).long(), label.reshape(B, -1).long()
    big = torch.iinfo(torch.long).max
    lo = torch.full((B, num_instances), big, dtype=torch.long, device=label.device)
    hi = torch.full((B, num_instances), -1, dtype=torch.long, device=label.device)
    lo.scatter_reduce_(1, flat_inst, flat_label, "amin")
    hi.scatter_reduce_(1, flat_inst, flat_label, "amax")
    present = hi >= 0
    mixed = present & (lo != hi)
    if mixed.any():
        b, l = (int(v) for v in mixed.nonzero()[0])
        raise ValueError(
            f"instance {l} of image {b} spans classes {int(lo[b, l])} and {int(hi[b, l])}: this table has one class "
            "per instance (use inade.nn.instance_parts for ids that span classes, as the generator does)"
        )
    return torch.where(present, hi, torch.zeros_like(hi))


@_instance_classes.register_fake
def _(label, inst, num_instances, num_classes, exact, hint):
    return label.new_empty((label.shape[0], num_instances), dtype=torch.long)


def instance_parts(label: torch.Tensor, inst: torch.Tensor, num_instances: int | None = None, *,
                   num_classes: int | None = None, exact: bool = False,
                   hint: str = "") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split instances that span several classes into class-pure parts, for the per-instance tables.

    The public code gives each instance id one noise row (and one pooled code) and takes
    the class parameters per pixel from the label map, so an id that covers pixels of
    several classes (COCO-Stuff's stuff ids) is one sample modulated by each pixel's class.
    The fused modulation reads one ``(γ, β)`` row per id, so such an id is handled as one
    *part* per ``(id, class)`` pair: every part reads its id's noise row (``noise[b, part_inst]``)
    and its own class's parameters, which is the public code's arithmetic pixel by pixel.

    Numbering: id ``l``'s part of its smallest class keeps the number ``l``; the other
    parts of each image get ``L, L+1, …`` in increasing ``(id, class)`` order. A map whose
    ids each lie in one class therefore comes back unchanged, with ``P = L``,
    ``part_inst = [0 … L-1]`` and ``part_cls`` the class of each id (0 for an id with no
    pixels in that image).

    All value checks run inside the custom op ``inade::instance_parts`` (as
    :func:`instance_classes`); under ``torch.compile`` ``P`` is a data-dependent size.

    Args:
        label: ``[B, H, W]`` integer class map.
        inst: ``[B, H, W]`` integer compact instance ids (``0 … L-1``).
        num_instances: ``L``; default ``inst.max() + 1`` over the batch.
        num_classes, exact, hint: as :func:`instance_classes`.

    Returns:
        ``(parts, part_inst, part_cls)``: ``parts [B, H, W]`` part ids ``0 … P-1`` (int32 for an
        int32 ``inst``, else int64), ``part_inst [B, P]`` int64 the id of each part, ``part_cls
        [B, P]`` int64 its class (padding rows past an image's parts: id 0, class 0, no pixels).

    Raises:
        ValueError: a label outside ``[0, num_classes)``, an id outside ``[0, L)``, or more
            rows than ids with ``exact``.
    """
    num_instances = _checked_maps(label, inst, num_instances)
    return _instance_parts(label, inst, num_instances, -1 if num_classes is None else num_classes, exact, hint)


def _checked_maps(label: torch.Tensor, inst: torch.Tensor, num_instances: int | None) -> int:
    """The checks :func:`instance_classes` and :func:`instance_parts` share: two ``[B, H, W]``
    maps of one shape; returns ``num_instances`` (``inst.max() + 1`` when ``None``)."""
    _checks.check_tensor(label, "label")
    _checks.check_tensor(inst, "inst")
    if label.shape != inst.shape or label.dim() != 3:
        raise ValueError(f"label {tuple(label.shape)} and inst {tuple(inst.shape)} must both be [B, H, W]")
    return int(inst.max()) + 1 if num_instances is None else num_instances


def _parts_dtype(inst: torch.Tensor) -> torch.dtype:
    return torch.int32 if inst.dtype == torch.int32 else torch.long


@torch.library.custom_op("inade::instance_parts", mutates_args=())
def _instance_parts(label: torch.Tensor, inst: torch.Tensor, num_instances: int, num_classes: int, exact: bool,
                    hint: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Body of :func:`instance_parts` (runs on real values, also under ``torch.compile``)."""
    _check_labels(label, num_classes, hint)
    _checks.check_ids_in_range(inst, num_instances)
    if exact:
        _check_rows(inst, num_instances)
    B, L, device = label.shape[0], num_instances, label.device
    flat_inst, flat_label = inst.reshape(B, -1).long(), label.reshape(B, -1).long()
    lo = torch.full((B, L), torch.iinfo(torch.long).max, dtype=torch.long, device=device)
    hi = torch.full((B, L), -1, dtype=torch.long, device=device)
    lo.scatter_reduce_(1, flat_inst, flat_label, "amin")
    hi.scatter_reduce_(1, flat_inst, flat_label, "amax")
    present = hi >= 0
    cls = torch.where(present, lo, torch.zeros_like(lo))
    rows = torch.arange(L, device=device).repeat(B, 1)
    if not bool((present & (lo != hi)).any()):  # every id in one class: the parts are the ids
        return inst.to(_parts_dtype(inst), copy=True), rows, cls
    # Key (id, class) of each pixel; a part is "extra" when its class is not its id's smallest.
    span = int(flat_label.max()) + 1
    key = flat_inst * span + flat_label
    if B * L * span <= _DENSE_PARTS:  # a [B, L·span] table of which (id, class) pairs occur
        seen = torch.zeros(B, L * span, dtype=torch.bool, device=device).scatter_(1, key, True)
        pair = torch.arange(L * span, device=device)
        extra = seen & (pair % span != lo.repeat_interleave(span, 1))
        rank = torch.cumsum(extra, 1) - 1  # the k-th extra part of image b is part L + k
        part_of_key = torch.where(extra, L + rank, pair // span)
        parts = part_of_key.gather(1, key)
        e_image, e_pair = extra.nonzero(as_tuple=True)
        e_part, e_inst, e_cls = L + rank[e_image, e_pair], e_pair // span, e_pair % span
        per_image = extra.sum(1)
    else:  # sparse: the sorted distinct keys of the whole batch
        image = torch.arange(B, device=device)[:, None]
        uniq, inverse = torch.unique(image * (L * span) + key, return_inverse=True)
        u_image, u_pair = uniq // (L * span), uniq % (L * span)
        first = torch.ones_like(uniq, dtype=torch.bool)
        first[1:] = (uniq[1:] // span) != (uniq[:-1] // span)  # the smallest class of each (image, id)
        extra = ~first
        per_image = torch.zeros(B, dtype=torch.long, device=device).scatter_add_(0, u_image, extra.long())
        rank = torch.cumsum(extra.long(), 0) - 1 - (torch.cumsum(per_image, 0) - per_image)[u_image]
        parts = torch.where(extra, L + rank, u_pair // span)[inverse]
        e_image, e_part = u_image[extra], L + rank[extra]
        e_inst, e_cls = u_pair[extra] // span, u_pair[extra] % span
    P = L + int(per_image.max())
    part_inst = torch.zeros(B, P, dtype=torch.long, device=device)
    part_cls = torch.zeros(B, P, dtype=torch.long, device=device)
    part_inst[:, :L], part_cls[:, :L] = rows, cls
    part_inst[e_image, e_part], part_cls[e_image, e_part] = e_inst, e_cls
    return parts.reshape(inst.shape).to(_parts_dtype(inst)), part_inst, part_cls


_DENSE_PARTS = 1 << 24  # largest B·L·classes for the dense (id, class) table of instance_parts


@_instance_parts.register_fake
def _(label, inst, num_instances, num_classes, exact, hint):
    P = torch.library.get_ctx().new_dynamic_size(min=num_instances)
    B = label.shape[0]
    return (inst.new_empty(inst.shape, dtype=_parts_dtype(inst)), label.new_empty((B, P), dtype=torch.long),
            label.new_empty((B, P), dtype=torch.long))
