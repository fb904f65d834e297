"""Plain-PyTorch reference of every op: the oracle the kernels are tested against.

One function per op, written to read like the paper's equations rather than to be
fast. Each takes the same arguments as the public op and differentiates through
ordinary autograd.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def gather_instance_rows(table: torch.Tensor, inst: torch.Tensor) -> torch.Tensor:
    """``table[b, inst[b, h, w], :]`` laid out as ``[B, C, H, W]``.

    Args:
        table: ``[B, L, C]`` per-instance rows.
        inst: ``[B, H, W]`` integer ids in ``[0, L)``.
    """
    rows = torch.gather(table, 1, inst.long().flatten(1)[..., None].expand(-1, -1, table.shape[2]))
    return rows.view(inst.shape[0], inst.shape[1], inst.shape[2], table.shape[2]).permute(0, 3, 1, 2)


def instance_modulation(
    x: torch.Tensor,
    inst: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    *,
    running_mean: torch.Tensor | None = None,
    running_var: torch.Tensor | None = None,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    process_group=None,
) -> torch.Tensor:
    """Paper Eq. 1 with Eq. 2's tables: ``y = x̂ · γ[inst] + β[inst]``.

    ``x̂`` is a parameter-free batch norm over ``(B, H, W)`` (``F.batch_norm``,
    which also updates the running statistics in training mode). With a
    ``process_group`` the statistics are those of the global batch
    (``nn.SyncBatchNorm``'s function).

    Shapes: ``x [B, C, H, W]``, ``inst [B, H, W]``, ``gamma, beta [B, L, C]``.
    """
    if process_group is not None and training:
        x_hat = _sync_batch_norm(x, running_mean, running_var, momentum, eps, process_group)
    else:
        # Statistics in the dtype of the running buffers (float32 under mixed precision).
        stat_dtype = running_mean.dtype if running_mean is not None else x.dtype
        x_hat = F.batch_norm(x.to(stat_dtype), running_mean, running_var, None, None, training, momentum, eps)
        x_hat = x_hat.to(x.dtype)
    return x_hat * gather_instance_rows(gamma, inst) + gather_instance_rows(beta, inst)


def _sync_batch_norm(x, running_mean, running_var, momentum, eps, process_group):
    """Batch norm whose statistics are all-reduced over ``process_group`` (differentiable)."""
    from torch.distributed.nn.functional import all_reduce  # noqa: PLC0415

    acc = x.double() if x.dtype == torch.float64 else x.float()
    count = torch.tensor([x.numel() / x.shape[1]], dtype=acc.dtype, device=x.device)
    sums = all_reduce(torch.cat([acc.sum((0, 2, 3)), (acc * acc).sum((0, 2, 3)), count]), group=process_group)
    c = x.shape[1]
    n = sums[-1]
    mean = sums[:c] / n
    var = sums[c : 2 * c] / n - mean * mean
    if running_mean is not None:
        with torch.no_grad():
            running_mean.lerp_(mean.detach().to(running_mean.dtype), momentum)
            running_var.lerp_((var.detach() * n / (n - 1)).to(running_var.dtype), momentum)
    x_hat = (acc - mean[:, None, None]) * torch.rsqrt(var + eps)[:, None, None]
    return x_hat.to(x.dtype)


def instance_avg_pool(x: torch.Tensor, inst: torch.Tensor, num_instances: int) -> torch.Tensor:
    """Paper Eq. 4: mean of ``x [B, C, H, W]`` over each instance's pixels -> ``[B, L, C]``; 0 where empty."""
    raise NotImplementedError("instance_avg_pool reference lands with issue 3")


def instance_conv2d(x, inst, weight, bias=None, stride=1, padding=0, renorm=False):
    """Instance-aware partial convolution (DESIGN op 3). Oracle: may unfold."""
    raise NotImplementedError("instance_conv2d reference lands with issue 3")
