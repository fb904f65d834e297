"""Triton kernels of instance_avg_pool (paper Eq. 4).

Every feature map is addressed as ``[B, C, HW]`` with strides ``(s_b, s_c, s_hw)``
(contiguous: ``s_hw = 1``; channels-last: ``s_c = 1``), so one kernel serves both
layouts; offsets are 64-bit. Pooled tables are ``[B, L, C]`` contiguous; ``inst``
is ``[B, HW]`` contiguous int32/int64; counts are float32 ``[B, L]``.

Passes over each feature map (the minimum):
    forward  : segment sums (read x once; no atomics: a tile's sum per instance is a
               matrix product with the tile's one-hot map, kept in registers), then a
               tiny host-side merge of the per-chunk partial sums and the division.
    backward : dx = dy[inst] / count[inst] (read the [B, L, C] table, write dx).
The pixel counts per instance come out of the first map's forward launch (its
programs of the first channel block also sum the one-hot map), so they are
computed once per call however many maps share the index map.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _forward_kernel(
    x_ptr,  # *T    [B, C, HW] feature map
    inst_ptr,  # *int  [B, HW] instance ids in [0, L)
    part_sum_ptr,  # *f32  [B, P, L, C] per-chunk sums of x over each instance
    part_count_ptr,  # *f32  [B, P, L] per-chunk pixel counts (written only with WRITE_COUNTS)
    C, HW, L,
    s_b, s_c, s_hw,  # strides of x
    tiles_per_prog,  # pixel tiles each program reduces
    WRITE_COUNTS: tl.constexpr,  # this launch also produces the pixel counts
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
    BLOCK_L: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    # Grid: (C blocks * L blocks, B, chunks). Each program sums a chunk of pixels
    # of one image for BLOCK_C channels and BLOCK_L instances: acc += x_tile @ one_hot.
    pid, b, chunk = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    n_c_blocks = tl.cdiv(C, BLOCK_C)
    pid_c, pid_l = pid % n_c_blocks, pid // n_c_blocks
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    lane = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    c_mask = c < C
    b64, c64 = b.to(tl.int64), c.to(tl.int64)
    acc = tl.zeros([BLOCK_C, BLOCK_L], dtype=tl.float32)
    count = tl.zeros([BLOCK_L], dtype=tl.float32)
    for t in range(0, tiles_per_prog):
        hw = (chunk * tiles_per_prog + t) * BLOCK_HW + tl.arange(0, BLOCK_HW)
        hw_mask = hw < HW
        hw64 = hw.to(tl.int64)
        ids = tl.load(inst_ptr + b64 * HW + hw64, mask=hw_mask, other=-1)
        x = tl.load(x_ptr + b64 * s_b + c64[:, None] * s_c + hw64[None, :] * s_hw,
                    mask=c_mask[:, None] & hw_mask[None, :], other=0.0)
        hit = ids[:, None] == lane[None, :]
        if x.dtype == tl.float16:
            # float16 times an exact 0/1 map, accumulated in float32.
            acc += tl.dot(x, hit.to(tl.float16), out_dtype=tl.float32)
        else:
            # float32 (three-pass TF32) and bfloat16 (exact in one TF32 pass) go through
            # a float32 product; the interpreter mishandles bfloat16 tl.dot anyway.
            acc += tl.dot(x.to(tl.float32), hit.to(tl.float32), input_precision=DOT_PRECISION)
        if WRITE_COUNTS:
            count += tl.sum(hit.to(tl.float32), axis=0)
    prog = b64 * tl.num_programs(2) + chunk
    lane64 = lane.to(tl.int64)
    l_mask = lane < L
    tl.store(part_sum_ptr + (prog * L + lane64[None, :]) * C + c64[:, None], acc,
             mask=c_mask[:, None] & l_mask[None, :])
    if WRITE_COUNTS:
        if pid_c == 0:
            tl.store(part_count_ptr + prog * L + lane64, count, mask=l_mask)


@triton.jit
def _backward_kernel(
    dy_ptr,  # *T    [B, L, C] gradient of the pooled table
    count_ptr,  # *f32  [B, L] pixel counts
    inst_ptr,  # *int  [B, HW] instance ids in [0, L)
    dx_ptr,  # *T    [B, C, HW] gradient of the feature map
    C, HW, L,
    sx_b, sx_c, sx_hw,  # strides of dx
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    pid_hw, pid_c, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    hw = pid_hw * BLOCK_HW + tl.arange(0, BLOCK_HW)
    c_mask, hw_mask = c < C, hw < HW
    mask = c_mask[:, None] & hw_mask[None, :]
    b64, c64, hw64 = b.to(tl.int64), c.to(tl.int64), hw.to(tl.int64)
    row = b64 * L + tl.load(inst_ptr + b64 * HW + hw64, mask=hw_mask, other=0).to(tl.int64)
    # Every pixel's own instance has count >= 1; masked lanes divide by 1.
    n = tl.load(count_ptr + row, mask=hw_mask, other=1.0)
    dy = tl.load(dy_ptr + row[None, :] * C + c64[:, None], mask=mask, other=0.0).to(tl.float32)
    dx = dy / n[None, :]
    tl.store(dx_ptr + b64 * sx_b + c64[:, None] * sx_c + hw64[None, :] * sx_hw, dx.to(dx_ptr.dtype.element_ty),
             mask=mask)


# ---------------------------------------------------------------------------
# Launchers: torch tensors in, torch tensors out. Inputs are validated by
# inade.ops.instance_avg_pool before they get here.
# ---------------------------------------------------------------------------

_BLOCK_C, _BLOCK_HW, _MAX_BLOCK_L = 32, 64, 64
_BWD_BLOCK_C, _BWD_BLOCK_HW = 32, 128


def _strides(t: torch.Tensor) -> tuple[int, int, int]:
    return t.stride(0), t.stride(1), t.stride(3)


def _block_l(num_instances: int) -> int:
    # tl.dot needs every dimension >= 16; wider L is split over programs.
    return max(16, min(_MAX_BLOCK_L, triton.next_power_of_2(num_instances)))


def _chunks(hw: int, programs_per_image: int) -> tuple[int, int]:
    """(number of pixel chunks per image, tiles per chunk) for a split-reduction grid."""
    tiles = triton.cdiv(hw, _BLOCK_HW)
    tiles_per_prog = triton.cdiv(tiles, max(1, min(tiles, programs_per_image)))
    return triton.cdiv(tiles, tiles_per_prog), tiles_per_prog


def _target_chunks(x: torch.Tensor, programs_per_chunk: int) -> int:
    # Enough programs to fill the GPU (about 4 per SM) without tiny chunks.
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 8
    return max(1, (4 * sms) // max(1, x.shape[0] * programs_per_chunk))


def _dot_precision(x: torch.Tensor) -> str:
    # On tensor cores three-pass TF32 is float32-accurate, and one pass is exact for
    # bfloat16 values (8 mantissa bits of TF32's 10); the interpreter has only "ieee".
    if not x.is_cuda:
        return "ieee"
    return "tf32" if x.dtype == torch.bfloat16 else "tf32x3"


def _pool_one(x: torch.Tensor, inst: torch.Tensor, num_instances: int, with_counts: bool):
    """Per-chunk sums ``[B, P, L, C]`` of one map (and per-chunk counts ``[B, P, L]``)."""
    B, C = x.shape[:2]
    hw = x.shape[2] * x.shape[3]
    block_l = _block_l(num_instances)
    programs = triton.cdiv(C, _BLOCK_C) * triton.cdiv(num_instances, block_l)
    n_chunks, tiles_per_prog = _chunks(hw, _target_chunks(x, programs))
    part_sum = torch.empty(B, n_chunks, num_instances, C, device=x.device, dtype=torch.float32)
    part_count = torch.empty(B, n_chunks, num_instances, device=x.device, dtype=torch.float32) if with_counts \
        else part_sum  # unused placeholder pointer
    _forward_kernel[(programs, B, n_chunks)](
        x, inst, part_sum, part_count, C, hw, num_instances, *_strides(x), tiles_per_prog,
        WRITE_COUNTS=with_counts, BLOCK_C=_BLOCK_C, BLOCK_HW=_BLOCK_HW, BLOCK_L=block_l,
        DOT_PRECISION=_dot_precision(x),
    )
    return part_sum, (part_count if with_counts else None)


def forward(xs: list[torch.Tensor], inst: torch.Tensor, num_instances: int):
    """Per-instance means ``[B, L, C_i]`` (dtype of each map) and float32 pixel counts ``[B, L]``.

    One launch per map (maps may differ in channels and layout); only the first
    launch counts pixels.
    """
    means, counts = [], None
    for i, x in enumerate(xs):
        part_sum, part_count = _pool_one(x, inst, num_instances, with_counts=i == 0)
        if i == 0:
            counts = part_count.sum(1)
        means.append((part_sum.sum(1) / counts.clamp(min=1)[..., None]).to(x.dtype))
    return means, counts


def backward(grads: list[torch.Tensor], inst: torch.Tensor, counts: torch.Tensor, channels_last: list[bool]):
    """``dx[b, c, h, w] = dy[b, inst[b, h, w], c] / count[b, inst[b, h, w]]`` for each ``dy [B, L, C]``."""
    B, H, W = inst.shape
    dxs = []
    for dy, cl in zip(grads, channels_last):
        C = dy.shape[2]
        fmt = torch.channels_last if cl else torch.contiguous_format
        dx = torch.empty(B, C, H, W, device=dy.device, dtype=dy.dtype, memory_format=fmt)
        grid = (triton.cdiv(H * W, _BWD_BLOCK_HW), triton.cdiv(C, _BWD_BLOCK_C), B)
        _backward_kernel[grid](
            dy, counts, inst, dx, C, H * W, counts.shape[1], *_strides(dx),
            BLOCK_C=_BWD_BLOCK_C, BLOCK_HW=_BWD_BLOCK_HW,
        )
        dxs.append(dx)
    return dxs

