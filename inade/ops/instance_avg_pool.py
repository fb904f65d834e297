"""instance_avg_pool: paper Eq. 4, the mean of a feature map over each instance.

    out[b, l, c] = Σ_{inst[b, h, w] = l} x[b, c, h, w] / |{(h, w) : inst[b, h, w] = l}|   (0 where empty)

The encoder pools four maps (μ and log σ² for γ and β) with one index map, so the
op takes one map or a sequence of them: the index map is read (and the pixel
counts are computed) once per call, whatever the number of maps. No one-hot map
is ever built.

Pieces (the same for every op of this package):
    * two ``torch.library`` custom ops (``inade::avg_pool_forward``,
      ``inade::avg_pool_backward``) with fake kernels, each dispatching to the
      chosen backend;
    * :class:`InstanceAvgPoolFunction`, the autograd wrapper that wires them;
    * :func:`instance_avg_pool`, the public function: input checks, backend choice.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from inade.ops import _backend, _checks, reference

# ---------------------------------------------------------------------------
# Backend dispatch of each pass
# ---------------------------------------------------------------------------


def _kernels():
    from inade.kernels import instance_avg_pool as k  # noqa: PLC0415  (triton is optional)

    return k


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _is_channels_last(x: Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


@torch.library.custom_op("inade::avg_pool_forward", mutates_args=())
def avg_pool_forward(xs: list[Tensor], inst: Tensor, num_instances: int) -> tuple[list[Tensor], Tensor]:
    """Per-instance means of each ``x [B, C_i, H, W]`` and the pixel counts of ``inst``.

    Returns ``([B, L, C_i] per map, dtype of the maps)`` and counts ``[B, L]``
    (float32; float64 for float64 maps). The ids are range-checked here, in the
    op's body, because only the body sees real values (also under ``torch.compile``).
    """
    _checks.check_ids_in_range(inst, num_instances)
    backend = _backend.resolve(inst.device)
    if backend == "cpp":
        means, counts = _backend.extension().avg_pool_forward(xs, inst, num_instances)
        return list(means), counts
    if backend == "triton" and xs[0].dtype != torch.float64:
        return _kernels().forward(xs, inst, num_instances)
    return _torch_forward(xs, inst, num_instances)


def _torch_forward(xs: list[Tensor], inst: Tensor, num_instances: int) -> tuple[list[Tensor], Tensor]:
    """The torch path of the forward pass (scatter-add, no one-hot map)."""
    acc = _acc_dtype(xs[0].dtype)
    index = inst.long().flatten(1)
    counts = torch.zeros(inst.shape[0], num_instances, dtype=acc, device=inst.device)
    counts.scatter_add_(1, index, torch.ones_like(index, dtype=acc))
    means = []
    for x in xs:
        B, C = x.shape[:2]
        sums = x.new_zeros(B, num_instances, C, dtype=acc)
        sums.scatter_add_(1, index[:, :, None].expand(-1, -1, C), x.flatten(2).transpose(1, 2).to(acc))
        means.append((sums / counts.clamp(min=1)[..., None]).to(x.dtype))
    return means, counts


@avg_pool_forward.register_fake
def _(xs, inst, num_instances):
    B = inst.shape[0]
    means = [x.new_empty(B, num_instances, x.shape[1]) for x in xs]
    return means, inst.new_empty(B, num_instances, dtype=_acc_dtype(xs[0].dtype))


@torch.library.custom_op("inade::avg_pool_backward", mutates_args=())
def avg_pool_backward(grads: list[Tensor], inst: Tensor, counts: Tensor, channels_last: list[bool]) -> list[Tensor]:
    """Gradient of each map: ``dx[b, c, h, w] = dy[b, inst[b, h, w], c] / count[b, inst[b, h, w]]``.

    ``grads``: ``[B, L, C_i]`` each, contiguous; ``counts``: ``[B, L]`` from the
    forward pass. Returns ``[B, C_i, H, W]`` per gradient, dtype of the gradient,
    channels-last where ``channels_last[i]``.
    """
    _checks.check_ids_in_range(inst, counts.shape[1])
    backend = _backend.resolve(inst.device)
    if backend == "cpp":
        return list(_backend.extension().avg_pool_backward(grads, inst, counts, channels_last))
    if backend == "triton" and counts.dtype != torch.float64:
        return _kernels().backward(grads, inst, counts, channels_last)
    per_pixel = (g.to(counts.dtype) / counts.clamp(min=1)[..., None] for g in grads)
    return [
        reference.gather_instance_rows(t, inst).to(g.dtype).contiguous(memory_format=_memory_format(cl))
        for t, g, cl in zip(per_pixel, grads, channels_last)
    ]


def _memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


@avg_pool_backward.register_fake
def _(grads, inst, counts, channels_last):
    B, H, W = inst.shape
    return [
        torch.empty(B, g.shape[2], H, W, dtype=g.dtype, device=g.device, memory_format=_memory_format(cl))
        for g, cl in zip(grads, channels_last)
    ]


def _no_double_backward(ctx, *grads):
    raise NotImplementedError("double backward of instance_avg_pool is not implemented")


for _op in (avg_pool_forward, avg_pool_backward):
    _op.register_autograd(_no_double_backward)


# ---------------------------------------------------------------------------
# Autograd wrapper
# ---------------------------------------------------------------------------


class InstanceAvgPoolFunction(torch.autograd.Function):
    """Autograd of the per-instance means of the maps ``xs`` (one output per map)."""

    @staticmethod
    def forward(ctx, inst, num_instances, *xs):
        means, counts = avg_pool_forward(list(xs), inst, num_instances)
        ctx.save_for_backward(inst, counts)
        ctx.channels_last = [_is_channels_last(x) for x in xs]
        return tuple(means)

    @staticmethod
    def backward(ctx, *grads):
        inst, counts = ctx.saved_tensors
        wanted = [i for i in range(len(grads)) if ctx.needs_input_grad[2 + i]]
        dxs = [None] * len(grads)
        if wanted:
            computed = avg_pool_backward(
                [grads[i].contiguous() for i in wanted], inst, counts, [ctx.channels_last[i] for i in wanted]
            )
            for i, dx in zip(wanted, computed):
                dxs[i] = dx
        return (None, None, *dxs)


# ---------------------------------------------------------------------------
# Public function
# ---------------------------------------------------------------------------


def instance_avg_pool(
    x: Tensor | Sequence[Tensor], inst: Tensor, num_instances: int
) -> Tensor | tuple[Tensor, ...]:
    """Instance average pooling (paper Eq. 4): the mean of ``x`` over each instance's pixels.

    ``out[b, l, c] = mean of x[b, c, h, w] over the pixels with inst[b, h, w] == l``;
    0 (and zero gradient) for an instance with no pixels.

    Args:
        x: ``[B, C, H, W]`` float16 / bfloat16 / float32 / float64, contiguous or
            channels-last; or a tuple/list of such maps sharing ``B, H, W``, one
            dtype and one device (channels may differ). Several maps in one call
            read the index map once.
        inst: ``[B, H, W]`` integer instance ids in ``[0, num_instances)`` at x's resolution.
        num_instances: ``L``, the number of rows of the result (>= 1).

    Returns:
        ``[B, L, C]`` in x's dtype (accumulation in float32; float64 for float64),
        or a tuple of them, one per map, when ``x`` is a tuple/list.
    """
    xs, single = _as_maps(x)
    _check_inputs(xs, inst, num_instances)
    xs = [_checks.flattenable_hw(t) for t in xs]
    inst = _checks.index_map_for_kernel(inst)
    if _backend.requested_backend() == "reference":
        _checks.check_ids_in_range(inst, num_instances)
        means = reference.instance_avg_pool(tuple(xs), inst, num_instances)
    else:
        means = InstanceAvgPoolFunction.apply(inst, num_instances, *xs)
    return means[0] if single else tuple(means)


def _as_maps(x) -> tuple[list[Tensor], bool]:
    """``x`` as a list of maps, and whether it was a single tensor."""
    if isinstance(x, Tensor):
        return [x], True
    if isinstance(x, (list, tuple)):
        if len(x) == 0:
            raise ValueError("x is an empty sequence: pass a [B, C, H, W] tensor or a tuple of them")
        return list(x), False
    raise TypeError(f"x must be a torch.Tensor or a tuple/list of tensors, got {type(x).__name__}")


def _check_inputs(xs: list[Tensor], inst: Tensor, num_instances) -> None:
    for i, t in enumerate(xs):
        name = "x" if len(xs) == 1 else f"x[{i}]"
        _checks.check_feature_map(t, name)
        _checks.check_index_map(inst, t)
        if i > 0:
            _checks.check_same_device(xs[0], t, name)
            if t.dtype != xs[0].dtype:
                raise TypeError(f"{name} has dtype {t.dtype} but x[0] has {xs[0].dtype}: pool maps of one dtype together")
    if isinstance(num_instances, bool) or not isinstance(num_instances, (int, torch.SymInt)):
        raise TypeError(f"num_instances must be an int, got {type(num_instances).__name__}")
    if num_instances < 1:
        raise ValueError(f"num_instances must be at least 1, got {num_instances}")
