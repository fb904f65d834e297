"""Triton kernels of instance_avg_pool (paper Eq. 4).

Every feature map is addressed as ``[B, C, HW]`` with strides ``(s_b, s_c, s_hw)``
(contiguous: ``s_hw = 1``; channels-last: ``s_c = 1``), so one kernel serves both
layouts; offsets are 64-bit. Pooled tables are ``[B, L, C]`` contiguous; ``inst``
is ``[B, HW]`` contiguous int32/int64; counts are ``[B, L]`` in the accumulator
dtype (float32; float64 for float64 maps).

Passes over the feature map (the minimum):
    forward  : segment sums (read x once; ``_launch.one_hot_segment_sum``: no atomics),
               then a tiny host-side merge of the per-chunk partial sums and the division.
               The programs of the first channel block also count each instance's pixels.
    backward : dx = dy[inst] / count[inst] (read the [B, L, C] table, write dx).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from inade.kernels import _launch
from inade.kernels._launch import chunk_tile, offsets_chw, one_hot_segment_sum, pixel_program, segment_program
from inade.ops import _checks


@triton.jit
def _forward_kernel(
    x_ptr,  # *T    [B, C, HW] feature map
    inst_ptr,  # *int  [B, HW] instance ids in [0, L)
    part_sum_ptr,  # *ACC  [B, P, L, C] per-chunk sums of x over each instance
    part_count_ptr,  # *ACC  [B, P, L] per-chunk pixel counts (written by the first channel block)
    C, HW, L,
    s_b, s_c, s_hw,  # strides of x
    tiles_per_prog,  # pixel tiles each program reduces
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
    BLOCK_L: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    # Grid: (C blocks * L blocks, B, chunks). Each program sums a chunk of pixels
    # of one image for BLOCK_C channels and BLOCK_L instances: acc += x_tile @ one_hot.
    b64, chunk, pid_c, c, c_mask, lane = segment_program(C, BLOCK_C, BLOCK_L)
    acc_t = part_sum_ptr.dtype.element_ty
    acc = tl.zeros([BLOCK_C, BLOCK_L], dtype=acc_t)
    count = tl.zeros([BLOCK_L], dtype=acc_t)
    for t in range(0, tiles_per_prog):
        hw64, hw_mask = chunk_tile(chunk, t, tiles_per_prog, HW, BLOCK_HW)
        ids = tl.load(inst_ptr + b64 * HW + hw64, mask=hw_mask, other=-1)
        x = tl.load(x_ptr + offsets_chw(b64, c, hw64, s_b, s_c, s_hw), mask=c_mask[:, None] & hw_mask[None, :],
                    other=0.0)
        # bfloat16 goes through a float32 product (exact in one TF32 pass; the
        # interpreter mishandles bfloat16 tl.dot anyway).
        acc = one_hot_segment_sum(acc, x, ids, lane, DOT_PRECISION)
        if pid_c == 0:
            count += tl.sum((ids[:, None] == lane[None, :]).to(acc_t), axis=0)
    prog = b64 * tl.num_programs(2) + chunk
    lane64 = lane.to(tl.int64)
    l_mask = lane < L
    tl.store(part_sum_ptr + (prog * L + lane64[None, :]) * C + c.to(tl.int64)[:, None], acc,
             mask=c_mask[:, None] & l_mask[None, :])
    if pid_c == 0:
        tl.store(part_count_ptr + prog * L + lane64, count, mask=l_mask)


@triton.jit
def _backward_kernel(
    dy_ptr,  # *T    [B, L, C] gradient of the pooled table
    count_ptr,  # *ACC  [B, L] pixel counts
    inst_ptr,  # *int  [B, HW] instance ids in [0, L)
    dx_ptr,  # *T    [B, C, HW] gradient of the feature map
    C, HW, L,
    sx_b, sx_c, sx_hw,  # strides of dx
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    b64, c, hw64, c_mask, hw_mask, mask = pixel_program(C, HW, BLOCK_C, BLOCK_HW)
    row = b64 * L + tl.load(inst_ptr + b64 * HW + hw64, mask=hw_mask, other=0).to(tl.int64)
    # Every pixel's own instance has count >= 1; masked lanes divide by 1.
    n = tl.load(count_ptr + row, mask=hw_mask, other=1.0)
    dy = tl.load(dy_ptr + row[None, :] * C + c.to(tl.int64)[:, None], mask=mask, other=0.0)
    dx = dy.to(count_ptr.dtype.element_ty) / n[None, :]
    tl.store(dx_ptr + offsets_chw(b64, c, hw64, sx_b, sx_c, sx_hw), dx.to(dx_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------
# Launchers: torch tensors in, torch tensors out. Inputs are validated by
# inade.ops.instance_avg_pool before they get here.
# ---------------------------------------------------------------------------

# Forward tile from the static resource report (bench/results/aot): no spill, 16-byte loads
# (the pixel tile doubles for 16-bit inputs), >= 50 % H100 occupancy up to 32 instances per
# block (25 % at 64).
_BLOCK_C, _BLOCK_HW, _MAX_BLOCK_L = 32, 16, 64
_BWD_BLOCK_C, _BWD_BLOCK_HW = 32, 128


def _block_l(num_instances: int) -> int:
    # tl.dot needs every dimension >= 16; wider L is split over programs.
    return max(16, min(_MAX_BLOCK_L, triton.next_power_of_2(num_instances)))


def forward(x: torch.Tensor, inst: torch.Tensor, num_instances: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-instance means ``[B, L, C]`` (dtype of ``x``) and pixel counts ``[B, L]`` (accumulator dtype)."""
    B, C = x.shape[:2]
    hw = x.shape[2] * x.shape[3]
    acc = _checks.acc_dtype(x.dtype)
    block_l = _block_l(num_instances)
    programs = triton.cdiv(C, _BLOCK_C) * triton.cdiv(num_instances, block_l)
    block_hw = 2 * _BLOCK_HW if x.element_size() == 2 else _BLOCK_HW
    n_chunks, tiles_per_prog = _launch.split_reduction(triton.cdiv(hw, block_hw), B * programs, x.device)
    part_sum = torch.empty(B, n_chunks, num_instances, C, device=x.device, dtype=acc)
    part_count = torch.empty(B, n_chunks, num_instances, device=x.device, dtype=acc)
    operands = torch.float16 if x.dtype == torch.float16 else acc
    _forward_kernel[(programs, B, n_chunks)](
        x, inst, part_sum, part_count, C, hw, num_instances, *_launch.strides_chw(x), tiles_per_prog,
        BLOCK_C=_BLOCK_C, BLOCK_HW=block_hw, BLOCK_L=block_l,
        DOT_PRECISION=_launch.dot_precision(operands, x.device, exact_in_tf32=x.dtype == torch.bfloat16),
    )
    counts = part_count.sum(1)
    return (part_sum.sum(1) / counts.clamp(min=1)[..., None]).to(x.dtype), counts


def backward(dy: torch.Tensor, inst: torch.Tensor, counts: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``dx[b, c, h, w] = dy[b, inst[b, h, w], c] / count[b, inst[b, h, w]]`` for ``dy [B, L, C]``:
    ``[B, C, H, W]`` in dy's dtype, channels-last when ``channels_last``."""
    B, H, W = inst.shape
    C = dy.shape[2]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    dx = torch.empty(B, C, H, W, device=dy.device, dtype=dy.dtype, memory_format=fmt)
    grid = (triton.cdiv(H * W, _BWD_BLOCK_HW), triton.cdiv(C, _BWD_BLOCK_C), B)
    _backward_kernel[grid](
        dy, counts, inst, dx, C, H * W, counts.shape[1], *_launch.strides_chw(dx),
        BLOCK_C=_BWD_BLOCK_C, BLOCK_HW=_BWD_BLOCK_HW,
    )
    return dx
