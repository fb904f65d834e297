"""What the ops share on the Python side: input validation, and the dtypes and
layouts the kernels receive.

Every op checks its inputs here before any kernel runs, so that a bad shape,
dtype, device or instance id becomes an error a user can act on instead of an
out-of-bounds read.
"""
from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INDEX_DTYPES = (torch.int32, torch.int64)


def check_tensor(t, name: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")


def check_float(t: torch.Tensor, name: str) -> None:
    """``t`` is a floating tensor of a supported dtype."""
    check_tensor(t, name)
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")


def check_feature_map(x: torch.Tensor, name: str = "x") -> None:
    """``x`` is a non-empty float ``[B, C, H, W]`` tensor."""
    check_float(x, name)
    if x.dim() != 4:
        raise ValueError(f"{name} must be [B, C, H, W], got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} has an empty batch (B=0)")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")


def check_index_map(inst: torch.Tensor, x: torch.Tensor, name: str = "inst") -> None:
    """``inst`` is an integer ``[B, H, W]`` map matching ``x: [B, C, H, W]`` on the same device."""
    check_tensor(inst, name)
    if inst.dtype.is_floating_point or inst.dtype.is_complex or inst.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor of instance ids, got {inst.dtype}")
    if inst.dim() != 3:
        raise ValueError(f"{name} must be [B, H, W], got shape {tuple(inst.shape)}")
    expected = (x.shape[0], x.shape[2], x.shape[3])
    if tuple(inst.shape) != expected:
        raise ValueError(
            f"{name} has shape {tuple(inst.shape)} but x is {tuple(x.shape)}: expected {expected}; "
            "resize index maps with inade.nn.resize_index_map"
        )
    check_same_device(x, inst, name)


def check_same_device(x: torch.Tensor, t: torch.Tensor, name: str) -> None:
    if t.device != x.device:
        raise ValueError(f"{name} is on {t.device} but x is on {x.device}: move both to one device")


def check_same_dtype(x: torch.Tensor, t: torch.Tensor, name: str) -> None:
    if t.dtype != x.dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but x has {x.dtype}: use one dtype for both")


def check_ids_in_range(inst: torch.Tensor, num_instances: int | None, name: str = "inst") -> None:
    """Every id of ``inst`` lies in ``[0, num_instances)`` (``num_instances=None``: any id >= 0,
    for ops where only equality of ids matters).

    This reads the values (one reduction and, on GPU, one synchronisation); the ops
    call it inside their custom-op bodies, which run on real tensors even under
    ``torch.compile``.
    """
    if inst.numel() == 0:
        return
    lo, hi = (int(v) for v in torch.aminmax(inst))
    if lo < 0:
        valid = ">= 0" if num_instances is None else f"0 ... {num_instances - 1}"
        raise ValueError(f"{name} has a negative id ({lo}): instance ids must be {valid}")
    if num_instances is not None and hi >= num_instances:
        raise ValueError(
            f"{name} has id {hi} but num_instances is {num_instances}: make ids compact "
            "(0 ... L-1 per batch) with inade.data.compact_ids, or pass tables with more rows"
        )


def index_map_for_kernel(inst: torch.Tensor) -> torch.Tensor:
    """``inst`` as a contiguous int32 or int64 tensor (other integer dtypes become int32)."""
    if inst.dtype not in INDEX_DTYPES:
        inst = inst.to(torch.int32)
    return inst.contiguous()


def flattenable_hw(x: torch.Tensor) -> torch.Tensor:
    """``x`` with memory in which ``(H, W)`` can be read as one axis of stride ``x.stride(3)``.

    Contiguous and channels-last tensors already are; anything else is copied.
    """
    if x.stride(2) == x.shape[3] * x.stride(3) or x.shape[2] == 1:
        return x
    return x.contiguous()


def dense(x: torch.Tensor) -> torch.Tensor:
    """``x`` if it is contiguous or channels-last, else a contiguous copy (what 4-stride kernels read)."""
    if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return x
    return x.contiguous()


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is channels-last and not also contiguous (as when ``C`` or ``H·W`` is 1)."""
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """The memory format an output that follows ``x`` gets: channels-last where :func:`is_channels_last`."""
    return torch.channels_last if is_channels_last(x) else torch.contiguous_format


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype every op accumulates in: float64 for float64, float32 for the others."""
    return torch.float64 if dtype == torch.float64 else torch.float32
