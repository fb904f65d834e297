"""instance_modulation: paper Eq. 1 with Eq. 2's per-instance tables, after batch norm.

    y[b, c, h, w] = x̂[b, c, h, w] · γ[b, inst[b, h, w], c] + β[b, inst[b, h, w], c]

``x̂`` is a parameter-free batch norm over ``(B, H, W)``. The op never builds a
one-hot map: each pixel gathers its instance's row of the ``[B, L, C]`` tables.

Pieces (the same for every op of this package):
    * six ``torch.library`` custom ops (``inade::instance_modulation_<pass>``) with
      fake kernels, each a forward or backward pass run by ``_backend.run_pass`` on
      the chosen backend (``reference`` runs ``reference.instance_modulation_<pass>``):
      ``stats``, ``apply``, ``backward_reduce``, ``backward_dx``, and the training passes
      ``forward`` (stats + apply) and ``backward`` (reduce + dx) that the C++ backend runs
      as one pass over memory each;
    * :class:`InstanceModulationFunction`, the autograd wrapper that wires them and
      all-reduces statistics over a ``process_group`` (synchronised batch norm);
    * :func:`instance_modulation`, the public function: input checks, running
      statistics, backend choice.
"""
from __future__ import annotations

import torch
from torch import Tensor

from inade.ops import _backend, _checks, reference

# ---------------------------------------------------------------------------
# The passes as custom ops (each runs on the backend _backend.run_pass picks)
# ---------------------------------------------------------------------------


@torch.library.custom_op("inade::instance_modulation_stats", mutates_args=())
def instance_modulation_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel ``(mean, biased variance)`` of ``x [B, C, H, W]`` over ``(B, H, W)``.

    Returns two ``[C]`` tensors, float32 (float64 for float64 ``x``).
    """
    return _backend.run_pass("modulation", "stats", x.device, x)


@instance_modulation_stats.register_fake
def _(x):
    c, acc = x.shape[1], _checks.acc_dtype(x.dtype)
    return x.new_empty(c, dtype=acc), x.new_empty(c, dtype=acc)


@torch.library.custom_op("inade::instance_modulation_apply", mutates_args=())
def instance_modulation_apply(x: Tensor, inst: Tensor, gamma: Tensor, beta: Tensor, mean: Tensor,
                              invstd: Tensor) -> Tensor:
    """``y = (x - mean) · invstd · γ[inst] + β[inst]``: ``[B, C, H, W]``, dtype and layout of ``x``.

    The instance ids are range-checked here, in the op's body, because only the
    body sees real values (also under ``torch.compile``).
    """
    _checks.check_ids_in_range(inst, gamma.shape[1])
    return _backend.run_pass("modulation", "apply", x.device, x, inst, gamma, beta, mean, invstd)


@instance_modulation_apply.register_fake
def _(x, inst, gamma, beta, mean, invstd):
    return torch.empty_like(x)


@torch.library.custom_op("inade::instance_modulation_backward_reduce", mutates_args=())
def instance_modulation_backward_reduce(
    dy: Tensor, x: Tensor, inst: Tensor, mean: Tensor, invstd: Tensor, num_instances: int
) -> tuple[Tensor, Tensor]:
    """Per-instance sums ``(Σ dy·x̂, Σ dy)`` over each instance's pixels: ``[B, L, C]`` each,
    float32 (float64 for float64 ``x``). They are the gradients of γ and β."""
    return _backend.run_pass("modulation", "backward_reduce", x.device, dy, x, inst, mean, invstd, num_instances)


@instance_modulation_backward_reduce.register_fake
def _(dy, x, inst, mean, invstd, num_instances):
    shape, acc = (x.shape[0], num_instances, x.shape[1]), _checks.acc_dtype(x.dtype)
    return x.new_empty(shape, dtype=acc), x.new_empty(shape, dtype=acc)


@torch.library.custom_op("inade::instance_modulation_backward_dx", mutates_args=())
def instance_modulation_backward_dx(
    dy: Tensor,
    x: Tensor,
    inst: Tensor,
    gamma: Tensor,
    mean: Tensor,
    invstd: Tensor,
    mean_dxhat: Tensor,
    mean_dxhat_xhat: Tensor,
    batch_stats: bool,
) -> Tensor:
    """Gradient of ``x``: ``invstd·(dy·γ[inst] − mean_dxhat − x̂·mean_dxhat_xhat)`` with batch
    statistics, ``invstd·dy·γ[inst]`` with fixed ones. ``[B, C, H, W]``, dtype and layout of ``x``."""
    args = (dy, x, inst, gamma, mean, invstd, mean_dxhat, mean_dxhat_xhat, batch_stats)
    return _backend.run_pass("modulation", "backward_dx", x.device, *args)


@instance_modulation_backward_dx.register_fake
def _(dy, x, inst, gamma, mean, invstd, mean_dxhat, mean_dxhat_xhat, batch_stats):
    return torch.empty_like(x)


@torch.library.custom_op("inade::instance_modulation_forward", mutates_args=())
def instance_modulation_forward(x: Tensor, inst: Tensor, gamma: Tensor, beta: Tensor,
                                eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The training forward with batch statistics, stats and apply in one: ``(y, mean, var, invstd)``.

    ``y`` as :func:`instance_modulation_apply`; ``mean, var`` as :func:`instance_modulation_stats`;
    ``invstd = 1/sqrt(var + eps)``. The C++ backend makes it one pass over memory (per group of
    channels, the statistics, then the output while the rows are still in cache).
    """
    _checks.check_ids_in_range(inst, gamma.shape[1])
    return _backend.run_pass("modulation", "forward", x.device, x, inst, gamma, beta, eps)


@instance_modulation_forward.register_fake
def _(x, inst, gamma, beta, eps):
    c, acc = x.shape[1], _checks.acc_dtype(x.dtype)
    return torch.empty_like(x), x.new_empty(c, dtype=acc), x.new_empty(c, dtype=acc), x.new_empty(c, dtype=acc)


@torch.library.custom_op("inade::instance_modulation_backward", mutates_args=())
def instance_modulation_backward(dy: Tensor, x: Tensor, inst: Tensor, gamma: Tensor, mean: Tensor,
                                 invstd: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The training backward with batch statistics of one process, reduce and dx in one:
    ``(dx, dgamma, dbeta)`` as :func:`instance_modulation_backward_dx` (with the batch-norm terms
    over ``B·H·W`` pixels) and :func:`instance_modulation_backward_reduce`. The C++ backend makes
    it one pass over memory (per group of channels, the sums, then dx from cache)."""
    return _backend.run_pass("modulation", "backward", x.device, dy, x, inst, gamma, mean, invstd)


@instance_modulation_backward.register_fake
def _(dy, x, inst, gamma, mean, invstd):
    shape = (x.shape[0], gamma.shape[1], x.shape[1])
    return torch.empty_like(x), x.new_empty(shape, dtype=mean.dtype), x.new_empty(shape, dtype=mean.dtype)


_backend.forbid_double_backward("instance_modulation", (
    instance_modulation_stats, instance_modulation_apply, instance_modulation_backward_reduce,
    instance_modulation_backward_dx, instance_modulation_forward, instance_modulation_backward,
))


# ---------------------------------------------------------------------------
# Autograd wrapper
# ---------------------------------------------------------------------------


class InstanceModulationFunction(torch.autograd.Function):
    """Autograd of ``y = x̂·γ[inst] + β[inst]``; returns ``(y, mean, var)``, the statistics used.

    ``mean, var`` given: they enter as constants (running statistics, or batch statistics
    already reduced over ``process_group``). ``mean, var = None``: batch statistics of ``x``,
    computed in the forward pass itself. With ``batch_stats`` the backward adds the
    dependence of the statistics on ``x`` (the batch-norm terms), all-reduced over
    ``process_group``; without a group it is the one-pass backward.
    """

    @staticmethod
    def forward(ctx, x, inst, gamma, beta, mean, var, eps, batch_stats, count, process_group):
        if mean is None:
            y, mean, var, invstd = instance_modulation_forward(x, inst, gamma, beta, eps)
        else:
            invstd = torch.rsqrt(var + eps)
            y = instance_modulation_apply(x, inst, gamma, beta, mean, invstd)
        ctx.save_for_backward(x, inst, gamma, mean, invstd)
        ctx.batch_stats, ctx.count, ctx.process_group = batch_stats, count, process_group
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, dy, _grad_mean, _grad_var):
        x, inst, gamma, mean, invstd = ctx.saved_tensors
        dy = _checks.flattenable_hw(dy)
        if ctx.batch_stats and ctx.process_group is None and ctx.needs_input_grad[0]:
            dx, dgamma, dbeta = instance_modulation_backward(dy, x, inst, gamma, mean, invstd)
            return dx, None, dgamma.to(gamma.dtype), dbeta.to(gamma.dtype), None, None, None, None, None, None
        dgamma, dbeta = instance_modulation_backward_reduce(dy, x, inst, mean, invstd, gamma.shape[1])
        mean_dxhat = mean_dxhat_xhat = mean.new_zeros(0)
        if ctx.batch_stats and ctx.needs_input_grad[0]:
            sums = reference.dxhat_sums(gamma, dgamma, dbeta)
            if ctx.process_group is not None:
                torch.distributed.all_reduce(sums, group=ctx.process_group)
            mean_dxhat, mean_dxhat_xhat = (sums / ctx.count).unbind(0)
        dx = None
        if ctx.needs_input_grad[0]:
            dx = instance_modulation_backward_dx(dy, x, inst, gamma, mean, invstd, mean_dxhat, mean_dxhat_xhat, ctx.batch_stats)
        return dx, None, dgamma.to(gamma.dtype), dbeta.to(gamma.dtype), None, None, None, None, None, None


# ---------------------------------------------------------------------------
# Public function
# ---------------------------------------------------------------------------


def instance_modulation(
    x: Tensor,
    inst: Tensor,
    gamma: Tensor,
    beta: Tensor,
    *,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    process_group=None,
) -> Tensor:
    """INADE modulation: batch norm without affine, then per-instance scale and shift.

    ``y[b, c, h, w] = x̂[b, c, h, w] · gamma[b, inst[b, h, w], c] + beta[b, inst[b, h, w], c]``

    Args:
        x: ``[B, C, H, W]`` float16 / bfloat16 / float32 / float64, contiguous or
            channels-last (the output keeps the layout).
        inst: ``[B, H, W]`` integer instance ids in ``[0, L)`` at x's resolution.
        gamma, beta: ``[B, L, C]`` per-instance scale and shift, dtype of ``x``.
        running_mean, running_var: ``[C]`` running statistics (float), updated in
            place in training mode like ``nn.BatchNorm2d`` (unbiased variance) and
            used in eval mode. May be ``None`` in training mode.
        training: batch statistics (True) or running statistics (False).
        momentum: weight of the new batch in the running statistics.
        eps: added to the variance.
        process_group: with training, the per-channel statistics (and in backward
            the per-channel gradient sums) are reduced over this group, so every
            process normalises with the statistics of the global batch.

    Returns:
        ``[B, C, H, W]``, dtype and layout of ``x``. Accumulation is in float32.
    """
    _check_inputs(x, inst, gamma, beta, running_mean, running_var, training)
    x = _checks.flattenable_hw(x)
    inst = _checks.index_map_for_kernel(inst)
    gamma, beta = gamma.contiguous(), beta.contiguous()
    if _backend.requested_backend() == "reference":
        _checks.check_ids_in_range(inst, gamma.shape[1])
        return reference.instance_modulation(
            x, inst, gamma, beta, running_mean=running_mean, running_var=running_var, training=training,
            momentum=momentum, eps=eps, process_group=process_group,
        )
    count = x.numel() // x.shape[1]
    mean = var = None  # batch statistics of this process: computed in the forward pass
    if training and process_group is not None:
        mean, var, count = _batch_statistics(x.detach(), process_group)
    elif training and count <= 1:
        raise ValueError(f"instance_modulation in training needs more than 1 value per channel, got x {tuple(x.shape)}")
    elif not training:
        mean, var = running_mean.to(_checks.acc_dtype(x.dtype)), running_var.to(_checks.acc_dtype(x.dtype))
    y, mean, var = InstanceModulationFunction.apply(x, inst, gamma, beta, mean, var, eps, training, count,
                                                    process_group)
    if training and running_mean is not None:
        _update_running_stats(running_mean, running_var, mean, var, count, momentum)
    return y


def _batch_statistics(x: Tensor, process_group) -> tuple[Tensor, Tensor, int]:
    """Per-channel mean and biased variance over the global batch of ``process_group``, and its pixel count."""
    mean, var = instance_modulation_stats(x)
    count = x.numel() // x.shape[1]
    # Exact merge of every process's (count, mean, var): no E[x²] − E[x]² cancellation.
    world = torch.distributed.get_world_size(process_group)
    local = torch.cat([mean.new_tensor([count]), mean, var])
    parts = [torch.empty_like(local) for _ in range(world)]
    torch.distributed.all_gather(parts, local, group=process_group)
    gathered = torch.stack(parts)
    counts, means, variances = gathered[:, :1], gathered[:, 1 : 1 + mean.numel()], gathered[:, 1 + mean.numel() :]
    total = counts.sum()
    g_mean = (counts * means).sum(0) / total
    g_var = (counts * (variances + (means - g_mean) ** 2)).sum(0) / total
    total = int(total.item())
    if total <= 1:
        raise ValueError("instance_modulation in training needs more than 1 value per channel over the group")
    return g_mean, g_var, total


def _update_running_stats(running_mean, running_var, mean, var, count, momentum) -> None:
    with torch.no_grad():
        running_mean.lerp_(mean.to(running_mean.dtype), momentum)
        running_var.lerp_((var * (count / (count - 1))).to(running_var.dtype), momentum)


def _check_inputs(x, inst, gamma, beta, running_mean, running_var, training) -> None:
    _checks.check_feature_map(x)
    _checks.check_index_map(inst, x)
    for name, t in (("gamma", gamma), ("beta", beta)):
        _checks.check_float(t, name)
        _checks.check_same_device(x, t, name)
        _checks.check_same_dtype(x, t, name)
        if t.dim() != 3 or t.shape[0] != x.shape[0] or t.shape[2] != x.shape[1]:
            raise ValueError(
                f"{name} must be [B, L, C] = [{x.shape[0]}, L, {x.shape[1]}] for x {tuple(x.shape)}, "
                f"got {tuple(t.shape)}"
            )
        if t.shape[1] == 0:
            raise ValueError(f"{name} has no instance rows (L=0)")
    if gamma.shape != beta.shape:
        raise ValueError(f"gamma {tuple(gamma.shape)} and beta {tuple(beta.shape)} must have one shape")
    if (running_mean is None) != (running_var is None):
        raise ValueError("pass both running_mean and running_var, or neither")
    if not training and running_mean is None:
        raise ValueError("eval mode (training=False) needs running_mean and running_var")
    for name, t in (("running_mean", running_mean), ("running_var", running_var)):
        if t is not None:
            _checks.check_float(t, name)
            _checks.check_same_device(x, t, name)
            if tuple(t.shape) != (x.shape[1],):
                raise ValueError(f"{name} must be [C] = [{x.shape[1]}], got {tuple(t.shape)}")
