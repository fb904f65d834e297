"""instance_avg_pool: paper Eq. 4, the mean of a feature map over each instance.

    out[b, l, c] = Σ_{inst[b, h, w] = l} x[b, c, h, w] / |{(h, w) : inst[b, h, w] = l}|   (0 where empty)

No one-hot map is ever built. The encoder pools its four heads (μ and log σ² for
γ and β) as one map of concatenated channels, so one call reads the index map once.

Pieces (the same for every op of this package):
    * two ``torch.library`` custom ops (``inade::instance_avg_pool_forward``,
      ``inade::instance_avg_pool_backward``) with fake kernels, each run by
      ``_backend.run_pass`` on the chosen backend;
    * :class:`InstanceAvgPoolFunction`, the autograd wrapper that wires them;
    * :func:`instance_avg_pool`, the public function: input checks, backend choice.
"""
from __future__ import annotations

import torch
from torch import Tensor

from inade.ops import _backend, _checks, reference

# ---------------------------------------------------------------------------
# The passes as custom ops (each runs on the backend _backend.run_pass picks)
# ---------------------------------------------------------------------------


@torch.library.custom_op("inade::instance_avg_pool_forward", mutates_args=())
def instance_avg_pool_forward(x: Tensor, inst: Tensor, num_instances: int) -> tuple[Tensor, Tensor]:
    """Per-instance means of ``x [B, C, H, W]`` and the pixel counts of ``inst``.

    Returns means ``[B, L, C]`` (dtype of ``x``) and counts ``[B, L]`` (float32;
    float64 for float64 ``x``). The ids are range-checked here, in the op's body,
    because only the body sees real values (also under ``torch.compile``).
    """
    _checks.check_ids_in_range(inst, num_instances)
    return _backend.run_pass("avg_pool", "forward", inst.device, x, inst, num_instances)


@instance_avg_pool_forward.register_fake
def _(x, inst, num_instances):
    B = inst.shape[0]
    return x.new_empty(B, num_instances, x.shape[1]), x.new_empty(B, num_instances, dtype=_checks.acc_dtype(x.dtype))


@torch.library.custom_op("inade::instance_avg_pool_backward", mutates_args=())
def instance_avg_pool_backward(dy: Tensor, inst: Tensor, counts: Tensor, channels_last: bool) -> Tensor:
    """Gradient of the map: ``dx[b, c, h, w] = dy[b, inst[b, h, w], c] / count[b, inst[b, h, w]]``.

    ``dy``: ``[B, L, C]`` contiguous; ``counts``: ``[B, L]`` from the forward pass.
    Returns ``[B, C, H, W]`` in dy's dtype, channels-last when ``channels_last``.
    """
    _checks.check_ids_in_range(inst, counts.shape[1])
    return _backend.run_pass("avg_pool", "backward", inst.device, dy, inst, counts, channels_last)


@instance_avg_pool_backward.register_fake
def _(dy, inst, counts, channels_last):
    B, H, W = inst.shape
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(B, dy.shape[2], H, W, dtype=dy.dtype, device=dy.device, memory_format=fmt)


_backend.forbid_double_backward("instance_avg_pool", (instance_avg_pool_forward, instance_avg_pool_backward))


# ---------------------------------------------------------------------------
# Autograd wrapper
# ---------------------------------------------------------------------------


class InstanceAvgPoolFunction(torch.autograd.Function):
    """Autograd of the per-instance means of ``x``."""

    @staticmethod
    def forward(ctx, x, inst, num_instances):
        means, counts = instance_avg_pool_forward(x, inst, num_instances)
        ctx.save_for_backward(inst, counts)
        ctx.channels_last = _checks.is_channels_last(x)
        return means

    @staticmethod
    def backward(ctx, dy):
        inst, counts = ctx.saved_tensors
        dx = None
        if ctx.needs_input_grad[0]:
            dx = instance_avg_pool_backward(dy.contiguous(), inst, counts, ctx.channels_last)
        return dx, None, None


# ---------------------------------------------------------------------------
# Public function
# ---------------------------------------------------------------------------


def instance_avg_pool(x: Tensor, inst: Tensor, num_instances: int) -> Tensor:
    """Instance average pooling (paper Eq. 4): the mean of ``x`` over each instance's pixels.

    ``out[b, l, c] = mean of x[b, c, h, w] over the pixels with inst[b, h, w] == l``;
    0 (and zero gradient) for an instance with no pixels.

    Args:
        x: ``[B, C, H, W]`` float16 / bfloat16 / float32 / float64, contiguous or
            channels-last (other strides are copied). To pool several maps with one
            index map, concatenate them along ``C`` and split the result.
        inst: ``[B, H, W]`` integer instance ids in ``[0, num_instances)`` at x's resolution.
        num_instances: ``L``, the number of rows of the result (>= 1).

    Returns:
        ``[B, L, C]`` in x's dtype (accumulation in float32; float64 for float64).
    """
    _check_inputs(x, inst, num_instances)
    x = _checks.flattenable_hw(x)
    inst = _checks.index_map_for_kernel(inst)
    if _backend.requested_backend() == "reference":
        _checks.check_ids_in_range(inst, num_instances)
        return reference.instance_avg_pool(x, inst, num_instances)
    return InstanceAvgPoolFunction.apply(x, inst, num_instances)


def _check_inputs(x, inst: Tensor, num_instances) -> None:
    if isinstance(x, (list, tuple)):
        raise TypeError(
            "x must be one [B, C, H, W] tensor: to pool several maps with one index map, "
            "concatenate them along C (torch.cat(maps, 1)) and split the result"
        )
    _checks.check_feature_map(x)
    _checks.check_index_map(inst, x)
    if isinstance(num_instances, bool) or not isinstance(num_instances, (int, torch.SymInt)):
        raise TypeError(f"num_instances must be an int, got {type(num_instances).__name__}")
    if num_instances < 1:
        raise ValueError(f"num_instances must be at least 1, got {num_instances}")
