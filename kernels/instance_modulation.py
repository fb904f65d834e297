"""Triton kernels of instance_modulation (paper Eq. 1-2 with batch norm).

Every feature map is addressed as ``[B, C, HW]`` with strides ``(s_b, s_c, s_hw)``
(contiguous: ``s_hw = 1``; channels-last: ``s_c = 1``), so one kernel serves both
layouts; offsets are 64-bit. Tables ``gamma, beta`` are ``[B, L, C]`` contiguous;
``inst`` is ``[B, HW]`` contiguous int32/int64.

Passes over the feature map (the minimum for a batch norm whose statistics must
be complete before the first output):
    forward  : stats (read x), apply (read x, write y)
    backward : reduce (read dy, x -> per-instance sums), dx (read dy, x, write dx)
The per-channel sums of the input gradient are derived on the host from the
per-instance sums (``sum dxhat = sum_l gamma_l * dbeta_l``), so no pass computes them.

Accumulation is in the dtype of the statistics and scratch buffers the launchers
pass (``*ACC``: float32, float64 for float64 inputs); strides, the split of
the reductions, the dot precision and the one-hot segment sum come from ``_launch``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from inade.kernels import _launch
from inade.kernels._launch import chunk_tile, offsets_chw, one_hot_segment_sum, pixel_program, segment_program
from inade.ops import _checks, reference


@triton.jit
def _stats_kernel(
    x_ptr,  # *T    [B, C, HW] feature map
    part_mean_ptr,  # *ACC  [P, C] mean of each program's chunk of pixels
    part_m2_ptr,  # *ACC  [P, C] sum of squared deviations of each chunk
    C,  # channels
    HW,  # pixels per image
    s_b, s_c, s_hw,  # strides of x
    tiles_per_prog,  # pixel tiles each program reduces
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    # Grid: (C blocks, B, chunks). Tiles are merged with Chan's formula so the
    # variance keeps the accumulator's precision when the mean is large.
    pid_c, b, chunk = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c < C
    base = b.to(tl.int64) * s_b + c[:, None].to(tl.int64) * s_c
    acc_t = part_mean_ptr.dtype.element_ty
    n = tl.zeros([BLOCK_C], dtype=acc_t)  # pixels merged so far (equal in every lane)
    mean = tl.zeros([BLOCK_C], dtype=acc_t)
    m2 = tl.zeros([BLOCK_C], dtype=acc_t)
    for t in range(0, tiles_per_prog):
        hw = (chunk * tiles_per_prog + t) * BLOCK_HW + tl.arange(0, BLOCK_HW)
        hw_mask = hw < HW
        mask = c_mask[:, None] & hw_mask[None, :]
        x = tl.load(x_ptr + base + hw[None, :].to(tl.int64) * s_hw, mask=mask, other=0.0).to(acc_t)
        tile_n = tl.sum(hw_mask.to(acc_t), axis=0)
        if tile_n > 0:
            tile_mean = tl.sum(x, axis=1) / tile_n
            dev = tl.where(mask, x - tile_mean[:, None], 0.0)
            tile_m2 = tl.sum(dev * dev, axis=1)
            total = n + tile_n
            delta = tile_mean - mean
            mean = mean + delta * (tile_n / total)
            m2 = m2 + tile_m2 + delta * delta * (n * tile_n / total)
            n = total
    prog = b * tl.num_programs(2) + chunk
    tl.store(part_mean_ptr + prog * C + c, mean, mask=c_mask)
    tl.store(part_m2_ptr + prog * C + c, m2, mask=c_mask)


@triton.jit
def _apply_kernel(
    x_ptr,  # *T   [B, C, HW] input
    inst_ptr,  # *int [B, HW] instance ids
    gamma_ptr,  # *T   [B, L, C] scale table
    beta_ptr,  # *T   [B, L, C] shift table
    mean_ptr,  # *ACC [C]
    invstd_ptr,  # *ACC [C]
    y_ptr,  # *T   [B, C, HW] output
    C, HW, L,
    s_b, s_c, s_hw,  # strides of x
    sy_b, sy_c, sy_hw,  # strides of y
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    b64, c, hw64, c_mask, hw_mask, mask = pixel_program(C, HW, BLOCK_C, BLOCK_HW)
    ids = tl.load(inst_ptr + b64 * HW + hw64, mask=hw_mask, other=0).to(tl.int64)
    row = (b64 * L + ids[None, :]) * C + c.to(tl.int64)[:, None]
    acc_t = mean_ptr.dtype.element_ty
    g = tl.load(gamma_ptr + row, mask=mask, other=0.0).to(acc_t)
    t = tl.load(beta_ptr + row, mask=mask, other=0.0).to(acc_t)
    mean = tl.load(mean_ptr + c, mask=c_mask, other=0.0)
    invstd = tl.load(invstd_ptr + c, mask=c_mask, other=0.0)
    x = tl.load(x_ptr + offsets_chw(b64, c, hw64, s_b, s_c, s_hw), mask=mask, other=0.0)
    x_hat = (x.to(acc_t) - mean[:, None]) * invstd[:, None]
    y = x_hat * g + t
    tl.store(y_ptr + offsets_chw(b64, c, hw64, sy_b, sy_c, sy_hw), y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _backward_reduce_kernel(
    dy_ptr,  # *T   [B, C, HW] output gradient
    x_ptr,  # *T   [B, C, HW] input
    inst_ptr,  # *int [B, HW] instance ids
    mean_ptr,  # *ACC [C]
    invstd_ptr,  # *ACC [C]
    part_dgamma_ptr,  # *ACC [B, P, L, C] per-chunk sums of dy * x_hat per instance
    part_dbeta_ptr,  # *ACC [B, P, L, C] per-chunk sums of dy per instance
    C, HW, L,
    sd_b, sd_c, sd_hw,  # strides of dy
    s_b, s_c, s_hw,  # strides of x
    tiles_per_prog,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
    BLOCK_L: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    # Grid: (C blocks * L blocks, B, chunks). The segment sums over instances are
    # one_hot_segment_sum's matrix products; DOT_PRECISION keeps them float32-exact.
    b64, chunk, _, c, c_mask, lane = segment_program(C, BLOCK_C, BLOCK_L)
    mean = tl.load(mean_ptr + c, mask=c_mask, other=0.0)
    invstd = tl.load(invstd_ptr + c, mask=c_mask, other=0.0)
    acc_t = mean_ptr.dtype.element_ty
    acc_g = tl.zeros([BLOCK_C, BLOCK_L], dtype=acc_t)
    acc_b = tl.zeros([BLOCK_C, BLOCK_L], dtype=acc_t)
    for t in range(0, tiles_per_prog):
        hw64, hw_mask = chunk_tile(chunk, t, tiles_per_prog, HW, BLOCK_HW)
        mask = c_mask[:, None] & hw_mask[None, :]
        ids = tl.load(inst_ptr + b64 * HW + hw64, mask=hw_mask, other=-1)
        dy = tl.load(dy_ptr + offsets_chw(b64, c, hw64, sd_b, sd_c, sd_hw), mask=mask, other=0.0).to(acc_t)
        x = tl.load(x_ptr + offsets_chw(b64, c, hw64, s_b, s_c, s_hw), mask=mask, other=0.0)
        x_hat = (x.to(acc_t) - mean[:, None]) * invstd[:, None]
        acc_g = one_hot_segment_sum(acc_g, dy * x_hat, ids, lane, DOT_PRECISION)
        acc_b = one_hot_segment_sum(acc_b, dy, ids, lane, DOT_PRECISION)
    part = ((b64 * tl.num_programs(2) + chunk) * L + lane[None, :].to(tl.int64)) * C + c.to(tl.int64)[:, None]
    out_mask = c_mask[:, None] & (lane[None, :] < L)
    tl.store(part_dgamma_ptr + part, acc_g, mask=out_mask)
    tl.store(part_dbeta_ptr + part, acc_b, mask=out_mask)


@triton.jit
def _backward_dx_kernel(
    dy_ptr,  # *T   [B, C, HW] output gradient
    x_ptr,  # *T   [B, C, HW] input
    inst_ptr,  # *int [B, HW] instance ids
    gamma_ptr,  # *T   [B, L, C] scale table
    mean_ptr,  # *ACC [C]
    invstd_ptr,  # *ACC [C]
    mean_dxhat_ptr,  # *ACC [C] mean over (B, H, W) of dy * gamma[inst]
    mean_dxhat_xhat_ptr,  # *ACC [C] mean of dy * gamma[inst] * x_hat
    dx_ptr,  # *T   [B, C, HW] input gradient
    C, HW, L,
    sd_b, sd_c, sd_hw,  # strides of dy
    s_b, s_c, s_hw,  # strides of x
    sx_b, sx_c, sx_hw,  # strides of dx
    BATCH_STATS: tl.constexpr,  # statistics came from this batch (training) or are fixed (eval)
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    b64, c, hw64, c_mask, hw_mask, mask = pixel_program(C, HW, BLOCK_C, BLOCK_HW)
    ids = tl.load(inst_ptr + b64 * HW + hw64, mask=hw_mask, other=0).to(tl.int64)
    acc_t = invstd_ptr.dtype.element_ty
    g = tl.load(gamma_ptr + (b64 * L + ids[None, :]) * C + c.to(tl.int64)[:, None], mask=mask, other=0.0).to(acc_t)
    invstd = tl.load(invstd_ptr + c, mask=c_mask, other=0.0)
    dy = tl.load(dy_ptr + offsets_chw(b64, c, hw64, sd_b, sd_c, sd_hw), mask=mask, other=0.0)
    dx_hat = dy.to(acc_t) * g
    if BATCH_STATS:
        mean = tl.load(mean_ptr + c, mask=c_mask, other=0.0)
        m1 = tl.load(mean_dxhat_ptr + c, mask=c_mask, other=0.0)
        m2 = tl.load(mean_dxhat_xhat_ptr + c, mask=c_mask, other=0.0)
        x = tl.load(x_ptr + offsets_chw(b64, c, hw64, s_b, s_c, s_hw), mask=mask, other=0.0)
        x_hat = (x.to(acc_t) - mean[:, None]) * invstd[:, None]
        dx_hat = dx_hat - m1[:, None] - x_hat * m2[:, None]
    dx = dx_hat * invstd[:, None]
    tl.store(dx_ptr + offsets_chw(b64, c, hw64, sx_b, sx_c, sx_hw), dx.to(dx_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------
# Launchers: torch tensors in, torch tensors out. Inputs are validated by
# inade.ops.instance_modulation before they get here.
# ---------------------------------------------------------------------------

# Tile sizes and warps from the static resource report (bench/results/aot): 8 elements
# per thread in the streaming kernels (no spill, >= 50 % H100 occupancy, 16-byte
# accesses); the tensor-core reduction at the largest tile that does not spill (its pixel
# tile doubles for 16-bit inputs, to keep 16-byte loads).
_BLOCK_C, _BLOCK_HW, _NUM_WARPS = 32, 64, 8
_REDUCE_BLOCK_C, _REDUCE_BLOCK_HW, _REDUCE_NUM_WARPS = 16, 32, 4


def stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(mean, biased var)`` of ``x [B, C, H, W]``, ``[C]`` each, float32 (float64 for float64)."""
    B, C = x.shape[:2]
    hw = x.shape[2] * x.shape[3]
    acc = _checks.acc_dtype(x.dtype)
    c_blocks = triton.cdiv(C, _BLOCK_C)
    n_chunks, tiles_per_prog = _launch.split_reduction(triton.cdiv(hw, _BLOCK_HW), B * c_blocks, x.device)
    part_mean = torch.empty(B * n_chunks, C, device=x.device, dtype=acc)
    part_m2 = torch.empty_like(part_mean)
    _stats_kernel[(c_blocks, B, n_chunks)](
        x, part_mean, part_m2, C, hw, *_launch.strides_chw(x), tiles_per_prog, BLOCK_C=_BLOCK_C, BLOCK_HW=_BLOCK_HW,
        num_warps=_NUM_WARPS,
    )
    # Chan's parallel-variance merge of the chunks (tiny: [P, C]).
    counts = torch.full((n_chunks,), float(tiles_per_prog * _BLOCK_HW), device=x.device, dtype=acc)
    counts[-1] = hw - (n_chunks - 1) * tiles_per_prog * _BLOCK_HW
    counts = counts.repeat(B)[:, None]
    total = counts.sum()
    mean = (part_mean * counts).sum(0) / total
    m2 = part_m2.sum(0) + (counts * (part_mean - mean) ** 2).sum(0)
    return mean, m2 / total


def apply(x, inst, gamma, beta, mean, invstd) -> torch.Tensor:
    """``y = (x - mean) * invstd * gamma[inst] + beta[inst]``, same shape, dtype and layout as ``x``."""
    B, C = x.shape[:2]
    hw = x.shape[2] * x.shape[3]
    y = torch.empty_like(x)
    grid = (triton.cdiv(hw, _BLOCK_HW), triton.cdiv(C, _BLOCK_C), B)
    _apply_kernel[grid](
        x, inst, gamma, beta, mean, invstd, y, C, hw, gamma.shape[1], *_launch.strides_chw(x), *_launch.strides_chw(y),
        BLOCK_C=_BLOCK_C, BLOCK_HW=_BLOCK_HW, num_warps=_NUM_WARPS,
    )
    return y


def backward_reduce(dy, x, inst, mean, invstd, num_instances: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-instance sums ``(sum dy * x_hat, sum dy)``, ``[B, L, C]`` each in the dtype of ``mean``."""
    B, C = x.shape[:2]
    hw = x.shape[2] * x.shape[3]
    block_l = max(16, min(64, triton.next_power_of_2(num_instances)))
    c_blocks = triton.cdiv(C, _REDUCE_BLOCK_C)
    l_blocks = triton.cdiv(num_instances, block_l)
    block_hw = 2 * _REDUCE_BLOCK_HW if x.element_size() == 2 else _REDUCE_BLOCK_HW
    n_chunks, tiles_per_prog = _launch.split_reduction(triton.cdiv(hw, block_hw), B * c_blocks * l_blocks, x.device)
    part_dgamma = torch.empty(B, n_chunks, num_instances, C, device=x.device, dtype=mean.dtype)
    part_dbeta = torch.empty_like(part_dgamma)
    _backward_reduce_kernel[(c_blocks * l_blocks, B, n_chunks)](
        dy, x, inst, mean, invstd, part_dgamma, part_dbeta, C, hw, num_instances, *_launch.strides_chw(dy),
        *_launch.strides_chw(x), tiles_per_prog, BLOCK_C=_REDUCE_BLOCK_C, BLOCK_HW=block_hw,
        BLOCK_L=block_l, DOT_PRECISION=_launch.dot_precision(mean.dtype, x.device), num_warps=_REDUCE_NUM_WARPS,
    )
    return part_dgamma.sum(1), part_dbeta.sum(1)


def backward_dx(dy, x, inst, gamma, mean, invstd, mean_dxhat, mean_dxhat_xhat, batch_stats: bool) -> torch.Tensor:
    """Gradient of ``x``; same shape, dtype and layout as ``x``."""
    B, C = x.shape[:2]
    hw = x.shape[2] * x.shape[3]
    dx = torch.empty_like(x)
    grid = (triton.cdiv(hw, _BLOCK_HW), triton.cdiv(C, _BLOCK_C), B)
    _backward_dx_kernel[grid](
        dy, x, inst, gamma, mean, invstd, mean_dxhat, mean_dxhat_xhat, dx, C, hw, gamma.shape[1],
        *_launch.strides_chw(dy), *_launch.strides_chw(x), *_launch.strides_chw(dx), BATCH_STATS=batch_stats, BLOCK_C=_BLOCK_C, BLOCK_HW=_BLOCK_HW,
        num_warps=_NUM_WARPS,
    )
    return dx


def forward(x, inst, gamma, beta, eps: float):
    """The training forward: ``(y, mean, var, invstd)`` from the stats and apply kernels."""
    mean, var = stats(x)
    invstd = torch.rsqrt(var + eps)
    return apply(x, inst, gamma, beta, mean, invstd), mean, var, invstd


def backward(dy, x, inst, gamma, mean, invstd):
    """The training backward: ``(dx, dgamma, dbeta)`` from the reduce and dx kernels."""
    dgamma, dbeta = backward_reduce(dy, x, inst, mean, invstd, gamma.shape[1])
    mean_dxhat, mean_dxhat_xhat = (reference.dxhat_sums(gamma, dgamma, dbeta) / (x.numel() // x.shape[1])).unbind(0)
    return backward_dx(dy, x, inst, gamma, mean, invstd, mean_dxhat, mean_dxhat_xhat, True), dgamma, dbeta
