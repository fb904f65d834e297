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
    """Paper Eq. 4: mean of ``x [B, C, H, W]`` over each instance's pixels -> ``[B, L, C]``; 0 where empty.

    ``x`` may be a tuple/list of maps sharing ``inst``; the result is then a tuple.
    """
    if isinstance(x, (list, tuple)):
        return tuple(instance_avg_pool(t, inst, num_instances) for t in x)
    # x(l) = {pixels with p[x] == l}, as a membership map [B, H, W, L].
    member = F.one_hot(inst.long(), num_instances).to(x.dtype)
    pixel_count = member.sum((1, 2))  # |x(l)|: [B, L]
    feature_sum = torch.einsum("bchw,bhwl->blc", x, member)  # Σ_{x ∈ x(l)} x: [B, L, C]
    # An empty instance has sum 0 and count 0: dividing by max(count, 1) gives 0.
    return feature_sum / pixel_count.clamp(min=1)[..., None]


def instance_tap_weights(
    inst: torch.Tensor, kernel_size: int, stride: int, padding: int, renorm: bool, dtype: torch.dtype
) -> torch.Tensor:
    """Weight of every tap of every window of the instance-aware convolution: ``[B, k², Ho·Wo]``.

    ``1`` where the tap's pixel lies inside the image and has the instance id of
    the window's centre pixel ``(i·s − p + k//2, j·s − p + k//2)``, else ``0``
    (ids are zero-padded, so a centre outside the image has id 0). With
    ``renorm`` every window's weights are multiplied by ``k² / (number of
    contributing taps)`` (0 for a window with none). Materialises an unfold of
    the ids: for the oracle and the fallback paths only.
    """
    k = kernel_size
    ones = torch.ones_like(inst[:, None], dtype=dtype)
    inside = F.unfold(ones, k, padding=padding, stride=stride) > 0  # [B, k², P]
    # float64 holds ids up to 2^53 exactly; unfold does not take integer tensors.
    ids = F.unfold(inst[:, None].to(torch.float64), k, padding=padding, stride=stride)
    same = (ids == ids[:, k * k // 2 : k * k // 2 + 1]) & inside
    taps = same.to(dtype)
    if renorm:
        count = taps.sum(1, keepdim=True)
        taps = taps * torch.where(count > 0, (k * k) / count.clamp_min(1), torch.zeros_like(count))
    return taps


def instance_conv2d(x, inst, weight, bias=None, stride=1, padding=0, renorm=False):
    """Instance-aware partial convolution (DESIGN op 3), written as unfold + masked matrix product.

    ``y[b, o, i, j] = Σ_{c, u, v} W[o, c, u, v] · x[b, c, i·s−p+u, j·s−p+v] · m[b, u, v, i, j] + bias[o]``

    with ``m`` from :func:`instance_tap_weights` (1 where the tap's instance is the
    centre's, 0 elsewhere and outside the image; ``k²/count`` with ``renorm``).

    Shapes: ``x [B, C_in, H, W]``, ``inst [B, H, W]``, ``weight [C_out, C_in, k, k]``
    (odd ``k``), ``bias [C_out]`` or ``None`` -> ``[B, C_out, Ho, Wo]`` with
    ``Ho = (H + 2p − k) // s + 1`` (likewise ``Wo``).
    """
    B, C, H, W = x.shape
    c_out, k = weight.shape[0], weight.shape[-1]
    h_out, w_out = (H + 2 * padding - k) // stride + 1, (W + 2 * padding - k) // stride + 1
    cols = F.unfold(x, k, padding=padding, stride=stride).view(B, C, k * k, h_out * w_out)
    taps = instance_tap_weights(inst, k, stride, padding, renorm, x.dtype)
    masked = (cols * taps[:, None]).view(B, C * k * k, h_out * w_out)
    y = torch.einsum("ok,bkp->bop", weight.reshape(c_out, C * k * k), masked)
    if bias is not None:
        y = y + bias[:, None]
    return y.view(B, c_out, h_out, w_out)
