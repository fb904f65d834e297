"""Plain-PyTorch reference of every op and of every pass: the oracle the kernels are
tested against, and the only plain-PyTorch code of the package.

Written to read like the paper's equations rather than to be fast. Two kinds of
function:

* ``instance_<op>(...)``: the whole op, with the public function's arguments,
  differentiated by ordinary autograd. ``INADE_BACKEND=reference`` runs these.
* ``instance_<op>_<pass>(...)``: one forward or backward pass, with the arguments,
  dtypes and layouts of the custom op of the same name (``inade::instance_<op>_<pass>``).
  The custom ops run them when the backend resolves to ``reference`` (for example
  on CPU without the extension ``inade._C``).

Accumulation is float32 for 16-bit inputs and float32 inputs, float64 for float64.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from inade.ops._checks import acc_dtype, memory_format_of

# ---------------------------------------------------------------------------
# What every op reads: an instance's row of a table, and sums over an instance
# ---------------------------------------------------------------------------


def gather_instance_rows(table: Tensor, inst: Tensor) -> Tensor:
    """``table[b, inst[b, h, w], :]`` laid out as ``[B, C, H, W]``.

    Args:
        table: ``[B, L, C]`` per-instance rows.
        inst: ``[B, H, W]`` integer ids in ``[0, L)``.
    """
    rows = torch.gather(table, 1, inst.long().flatten(1)[..., None].expand(-1, -1, table.shape[2]))
    return rows.view(inst.shape[0], inst.shape[1], inst.shape[2], table.shape[2]).permute(0, 3, 1, 2)


def segment_sum(v: Tensor, inst: Tensor, num_instances: int) -> Tensor:
    """``out[b, l, c] = Σ_{(h, w) : inst[b, h, w] = l} v[b, c, h, w]``: ``[B, L, C]`` in v's dtype.

    ``v``: ``[B, C, H, W]``; an instance without pixels sums to 0. Differentiable in ``v``.
    """
    B, C = v.shape[:2]
    index = inst.long().flatten(1)[:, :, None].expand(-1, -1, C)
    return v.new_zeros(B, num_instances, C).scatter_add(1, index, v.flatten(2).transpose(1, 2))


def pixel_counts(inst: Tensor, num_instances: int, dtype: torch.dtype) -> Tensor:
    """``|x(l)|``, the number of pixels of each instance: ``[B, L]`` in ``dtype``."""
    index = inst.long().flatten(1)
    return torch.zeros(inst.shape[0], num_instances, dtype=dtype, device=inst.device).scatter_add_(
        1, index, torch.ones_like(index, dtype=dtype)
    )


def _col(v: Tensor) -> Tensor:
    """A per-channel ``[C]`` vector as ``[C, 1, 1]``, to broadcast over ``[B, C, H, W]``."""
    return v[:, None, None]


# ---------------------------------------------------------------------------
# Op 1: instance_modulation (paper Eq. 1 with Eq. 2's tables, after batch norm)
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

    acc = x.to(acc_dtype(x.dtype))
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
    return ((acc - _col(mean)) * _col(torch.rsqrt(var + eps))).to(x.dtype)


def normalized(x: Tensor, mean: Tensor, invstd: Tensor) -> Tensor:
    """``x̂ = (x − mean) · invstd`` per channel, in the dtype of the statistics."""
    return (x.to(mean.dtype) - _col(mean)) * _col(invstd)


def instance_modulation_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel ``(mean, biased variance)`` of ``x [B, C, H, W]`` over ``(B, H, W)``: ``[C]`` each,
    float32 (float64 for float64 ``x``)."""
    var, mean = torch.var_mean(x.to(acc_dtype(x.dtype)), dim=(0, 2, 3), correction=0)
    return mean, var


def instance_modulation_apply(x: Tensor, inst: Tensor, gamma: Tensor, beta: Tensor, mean: Tensor,
                              invstd: Tensor) -> Tensor:
    """``y = x̂ · γ[inst] + β[inst]`` with ``x̂ = (x − mean) · invstd``: dtype and layout of ``x``."""
    y = normalized(x, mean, invstd) * gather_instance_rows(gamma, inst) + gather_instance_rows(beta, inst)
    return y.to(x.dtype).contiguous(memory_format=memory_format_of(x))


def instance_modulation_backward_reduce(dy: Tensor, x: Tensor, inst: Tensor, mean: Tensor, invstd: Tensor,
                                        num_instances: int) -> tuple[Tensor, Tensor]:
    """``(Σ_{x(l)} dy · x̂, Σ_{x(l)} dy)``, the gradients of γ and β: ``[B, L, C]`` each, dtype of ``mean``."""
    dy = dy.to(mean.dtype)
    return (segment_sum(dy * normalized(x, mean, invstd), inst, num_instances),
            segment_sum(dy, inst, num_instances))


def instance_modulation_backward_dx(dy: Tensor, x: Tensor, inst: Tensor, gamma: Tensor, mean: Tensor,
                                    invstd: Tensor, mean_dxhat: Tensor, mean_dxhat_xhat: Tensor,
                                    batch_stats: bool) -> Tensor:
    """Gradient of ``x``: dtype and layout of ``x``.

    With ``g = dy · γ[inst]`` (the gradient of ``x̂``):
    ``dx = invstd · (g − mean(g) − x̂ · mean(g · x̂))`` with batch statistics, and
    ``dx = invstd · g`` with fixed (running) statistics; the two per-channel means
    come in as ``mean_dxhat`` and ``mean_dxhat_xhat``.
    """
    dx_hat = dy.to(mean.dtype) * gather_instance_rows(gamma, inst).to(mean.dtype)
    if batch_stats:
        dx_hat = dx_hat - _col(mean_dxhat) - normalized(x, mean, invstd) * _col(mean_dxhat_xhat)
    return (dx_hat * _col(invstd)).to(x.dtype).contiguous(memory_format=memory_format_of(x))


def dxhat_sums(gamma: Tensor, dgamma: Tensor, dbeta: Tensor) -> Tensor:
    """``[Σ dy·γ[inst], Σ dy·γ[inst]·x̂]`` per channel, ``[2, C]``, from the per-instance sums
    ``dgamma, dbeta [B, L, C]`` (``Σ dy·γ[inst] = Σ_l γ_l·dbeta_l``): the two batch-norm terms
    of the input gradient, before the division by the pixel count."""
    g = gamma.to(dgamma.dtype)
    return torch.stack([(g * dbeta).sum((0, 1)), (g * dgamma).sum((0, 1))])


def instance_modulation_forward(x: Tensor, inst: Tensor, gamma: Tensor, beta: Tensor,
                                eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The training forward with batch statistics: ``(y, mean, var, invstd)``, the stats pass then
    the apply pass with ``invstd = 1/sqrt(var + eps)``."""
    mean, var = instance_modulation_stats(x)
    invstd = torch.rsqrt(var + eps)
    return instance_modulation_apply(x, inst, gamma, beta, mean, invstd), mean, var, invstd


def instance_modulation_backward(dy: Tensor, x: Tensor, inst: Tensor, gamma: Tensor, mean: Tensor,
                                 invstd: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The training backward with batch statistics: ``(dx, dgamma, dbeta)``, the reduce pass, the
    batch-norm terms from its sums (:func:`dxhat_sums` over ``B·H·W`` pixels), then the dx pass."""
    dgamma, dbeta = instance_modulation_backward_reduce(dy, x, inst, mean, invstd, gamma.shape[1])
    mean_dxhat, mean_dxhat_xhat = (dxhat_sums(gamma, dgamma, dbeta) / (x.numel() // x.shape[1])).unbind(0)
    dx = instance_modulation_backward_dx(dy, x, inst, gamma, mean, invstd, mean_dxhat, mean_dxhat_xhat, True)
    return dx, dgamma, dbeta


# ---------------------------------------------------------------------------
# Op 2: instance_avg_pool (paper Eq. 4)
# ---------------------------------------------------------------------------


def instance_avg_pool(x: Tensor, inst: Tensor, num_instances: int) -> Tensor:
    """Paper Eq. 4: mean of ``x [B, C, H, W]`` over each instance's pixels ``x(l)`` -> ``[B, L, C]``; 0 where empty."""
    return instance_avg_pool_forward(x, inst, num_instances)[0]


def instance_avg_pool_forward(x: Tensor, inst: Tensor, num_instances: int) -> tuple[Tensor, Tensor]:
    """``(Σ_{x(l)} x / |x(l)|, |x(l)|)``: means ``[B, L, C]`` in x's dtype and pixel counts ``[B, L]``
    (float32; float64 for float64 ``x``). Differentiable in ``x``."""
    acc = acc_dtype(x.dtype)
    counts = pixel_counts(inst, num_instances, acc)
    # An empty instance has sum 0 and count 0: dividing by max(count, 1) gives 0.
    means = segment_sum(x.to(acc), inst, num_instances) / counts.clamp(min=1)[..., None]
    return means.to(x.dtype), counts


def instance_avg_pool_backward(dy: Tensor, inst: Tensor, counts: Tensor, channels_last: bool) -> Tensor:
    """``dx[b, c, h, w] = dy[b, inst[b, h, w], c] / |x(inst[b, h, w])|``: ``[B, C, H, W]`` in dy's dtype,
    channels-last when ``channels_last``. ``dy``: ``[B, L, C]``; ``counts``: ``[B, L]`` from the forward pass."""
    per_pixel = dy.to(counts.dtype) / counts.clamp(min=1)[..., None]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return gather_instance_rows(per_pixel, inst).to(dy.dtype).contiguous(memory_format=fmt)


# ---------------------------------------------------------------------------
# Op 3: instance_conv2d (instance-aware partial convolution)
# ---------------------------------------------------------------------------


def instance_tap_weights(inst: Tensor, kernel_size: int, stride: int, padding: int, renorm: bool,
                         dtype: torch.dtype) -> Tensor:
    """Weight ``m`` of every tap of every window of the instance-aware convolution: ``[B, k², Ho·Wo]``.

    ``1`` where the tap's pixel lies inside the image and has the instance id of
    the window's centre pixel ``(i·s − p + k//2, j·s − p + k//2)``, else ``0``
    (ids are zero-padded, so a centre outside the image has id 0). With
    ``renorm`` every window's weights are multiplied by ``k² / (number of
    contributing taps)`` (0 for a window with none). Materialises an unfold of
    the ids: for the oracle only.
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


def _masked_columns(x: Tensor, inst: Tensor, k: int, stride: int, padding: int, renorm: bool) -> Tensor:
    """``x[b, c, i·s−p+u, j·s−p+v] · m[b, u, v, i, j]`` as ``[B, C·k², Ho·Wo]`` (an unfold: oracle only)."""
    B, C = x.shape[:2]
    cols = F.unfold(x, k, padding=padding, stride=stride).view(B, C, k * k, -1)
    return (cols * instance_tap_weights(inst, k, stride, padding, renorm, x.dtype)[:, None]).flatten(1, 2)


def instance_conv2d(x: Tensor, inst: Tensor, weight: Tensor, bias: Tensor | None = None, stride: int = 1,
                    padding: int = 0, renorm: bool = False) -> Tensor:
    """Instance-aware partial convolution (DESIGN op 3), written as unfold + masked matrix product.

    ``y[b, o, i, j] = Σ_{c, u, v} W[o, c, u, v] · x[b, c, i·s−p+u, j·s−p+v] · m[b, u, v, i, j] + bias[o]``

    with ``m`` from :func:`instance_tap_weights` (1 where the tap's instance is the
    centre's, 0 elsewhere and outside the image; ``k²/count`` with ``renorm``).

    Shapes: ``x [B, C_in, H, W]``, ``inst [B, H, W]``, ``weight [C_out, C_in, k, k]``
    (odd ``k``), ``bias [C_out]`` or ``None`` -> ``[B, C_out, Ho, Wo]`` with
    ``Ho = (H + 2p − k) // s + 1`` (likewise ``Wo``), dtype and layout of ``x``.
    """
    B, _, H, W = x.shape
    c_out, k = weight.shape[0], weight.shape[-1]
    h_out, w_out = (H + 2 * padding - k) // stride + 1, (W + 2 * padding - k) // stride + 1
    y = torch.einsum("ok,bkp->bop", weight.reshape(c_out, -1), _masked_columns(x, inst, k, stride, padding, renorm))
    if bias is not None:
        y = y + bias[:, None]
    return y.view(B, c_out, h_out, w_out).contiguous(memory_format=memory_format_of(x))


#: The forward pass is the op itself.
instance_conv2d_forward = instance_conv2d


def instance_conv2d_backward_input(dy: Tensor, x: Tensor, inst: Tensor, weight: Tensor, stride: int, padding: int,
                                   renorm: bool) -> Tensor:
    """``dx[b, c, y, x] = Σ_{o, windows covering (y, x)} W[o, c, u, v] · m[b, u, v, i, j] · dy[b, o, i, j]``:
    shape, dtype and layout of ``x`` (only those of ``x`` are read)."""
    k = weight.shape[-1]
    B, C = x.shape[:2]
    cols = torch.einsum("ok,bop->bkp", weight.reshape(weight.shape[0], -1), dy.flatten(2))
    taps = instance_tap_weights(inst, k, stride, padding, renorm, x.dtype)
    cols = (cols.view(B, C, k * k, -1) * taps[:, None]).flatten(1, 2)
    dx = F.fold(cols, x.shape[2:], k, padding=padding, stride=stride)
    return dx.contiguous(memory_format=memory_format_of(x))


def instance_conv2d_backward_weight(dy: Tensor, x: Tensor, inst: Tensor, kernel_size: int, stride: int,
                                    padding: int, renorm: bool) -> Tensor:
    """``dW[o, c, u, v] = Σ_{b, i, j} dy[b, o, i, j] · x[b, c, i·s−p+u, j·s−p+v] · m[b, u, v, i, j]``:
    ``[C_out, C_in, k, k]`` contiguous, dtype of ``x``."""
    k, C = kernel_size, x.shape[1]
    dw = torch.einsum("bop,bkp->ok", dy.flatten(2), _masked_columns(x, inst, k, stride, padding, renorm))
    return dw.reshape(dy.shape[1], C, k, k).contiguous()
