"""Triton kernels of instance_conv2d (instance-aware partial convolution).

Three implicit GEMMs, none of which stores an unfold of its input: each program
gathers its operand tiles straight from the feature maps, tap by tap, and masks
them on the fly with the instance test (tap id == window-centre id, tap inside
the image).

    forward       y  [B·Ho·Wo, C_out]      = Σ_tap  X_tap ⊙ m_tap   @ W_tap       (M: output pixels)
    input grad    dx [B·H·W, C_in]         = Σ_tap  dY_tap ⊙ m_tap  @ W_tapᵀ      (M: input pixels)
    weight grad   dW_tap [C_out, C_in]     = Σ_pix  dYᵀ @ (X_tap ⊙ m_tap)           (split over pixels)

``m_tap`` is 0/1 (times ``k²/count`` with renorm). Feature maps are addressed with
four strides ``(b, c, h, w)``, so contiguous and channels-last tensors take the same
kernels; pointer offsets are 64-bit (pixel indices are int32: ``B·H·W < 2³¹``).
The weight is re-laid out on the host as ``[k², C_in, C_out]`` (forward) and
``[k², C_out, C_in]`` (input gradient) so its tiles load along contiguous rows.
Accumulation is float32 (float64 for float64 inputs: ``ACC``) in ``tl.dot``; the
dot precision, strides and the split of the weight-gradient reduction follow
``_launch``'s rules (float32 operands: ``tf32x3`` unless
``torch.get_float32_matmul_precision()`` allows TF32; the interpreter has only ``"ieee"``).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from inade.kernels import _launch
from inade.ops import _checks

# ---------------------------------------------------------------------------
# Shared pieces: where a window lies, and which of its taps count
# ---------------------------------------------------------------------------


@triton.jit
def _window(m, H_out, W_out, stride, pad):
    """Batch index (int64), and top-left input corner (y0, x0) of output pixels ``m``."""
    hw_out = H_out * W_out
    b = m // hw_out
    r = m % hw_out
    oy = r // W_out
    ox = r % W_out
    return b.to(tl.int64), oy, ox, oy * stride - pad, ox * stride - pad


@triton.jit
def _id_at(inst_ptr, b64, y, x, H, W, mask):
    """Instance id at input pixel (y, x), 0 outside the image (ids are zero-padded), and whether it is inside."""
    inside = mask & (y >= 0) & (y < H) & (x >= 0) & (x < W)
    ids = tl.load(inst_ptr + b64 * H * W + y * W + x, mask=inside, other=0)
    return ids, inside


@triton.jit
def _tap_count(inst_ptr, b64, y0, x0, H, W, mask, KSIZE: tl.constexpr, ACC: tl.constexpr):
    """Number of taps of each window (corner y0, x0) that count, as ``ACC``."""
    centre, _ = _id_at(inst_ptr, b64, y0 + KSIZE // 2, x0 + KSIZE // 2, H, W, mask)
    count = tl.zeros(y0.shape, dtype=ACC)
    for t in tl.static_range(KSIZE * KSIZE):
        ids, inside = _id_at(inst_ptr, b64, y0 + t // KSIZE, x0 + t % KSIZE, H, W, mask)
        count += (inside & (ids == centre)).to(ACC)
    return count


@triton.jit
def _mma(acc, a, b, DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """``acc + a @ b`` in acc's dtype. ``UPCAST`` feeds float32 operands to ``tl.dot``
    (``_launch.upcast``: bfloat16 in the interpreter)."""
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return acc + tl.dot(a, b, input_precision=DOT_PRECISION)


@triton.jit
def _renorm_scale_kernel(
    inst_ptr,  # *int [B, H, W] instance ids
    scale_ptr,  # *ACC [B, Ho, Wo] out: k² / (taps that count), 0 where none
    M, H, W, H_out, W_out, stride, pad,
    KSIZE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    m = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = m < M
    b64, oy, ox, y0, x0 = _window(m, H_out, W_out, stride, pad)
    count = _tap_count(inst_ptr, b64, y0, x0, H, W, mask, KSIZE, scale_ptr.dtype.element_ty)
    scale = tl.where(count > 0, (KSIZE * KSIZE) / tl.maximum(count, 1.0), 0.0)
    tl.store(scale_ptr + m, scale, mask=mask)


# ---------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------


@triton.jit
def _forward_kernel(
    x_ptr,  # *T   [B, C_in, H, W] input
    inst_ptr,  # *int [B, H, W] instance ids
    w_ptr,  # *T   [k², C_in, C_out] weight, tap-major
    bias_ptr,  # *T   [C_out] (unused without HAS_BIAS)
    y_ptr,  # *T   [B, C_out, Ho, Wo] output
    M, C_in, C_out, H, W, H_out, W_out, stride, pad,
    sx_b, sx_c, sx_h, sx_w,  # strides of x
    sy_b, sy_c, sy_h, sy_w,  # strides of y
    KSIZE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    RENORM: tl.constexpr,
    ACC: tl.constexpr,  # accumulator type: float32, or float64 for float64 x
    BLOCK_M: tl.constexpr,  # output pixels per program
    BLOCK_N: tl.constexpr,  # output channels per program
    BLOCK_K: tl.constexpr,  # input channels per dot
    DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,  # float32 operands for tl.dot (bfloat16 in the interpreter)
):
    pid_m, pid_n = tl.program_id(0), tl.program_id(1)
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_mask, n_mask = m < M, n < C_out
    b64, oy, ox, y0, x0 = _window(m, H_out, W_out, stride, pad)
    centre, _ = _id_at(inst_ptr, b64, y0 + KSIZE // 2, x0 + KSIZE // 2, H, W, m_mask)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
    count = tl.zeros([BLOCK_M], dtype=ACC)
    for t in range(0, KSIZE * KSIZE):
        iy, ix = y0 + t // KSIZE, x0 + t % KSIZE
        ids, inside = _id_at(inst_ptr, b64, iy, ix, H, W, m_mask)
        on = inside & (ids == centre)
        count += on.to(ACC)
        pix = b64 * sx_b + iy.to(tl.int64) * sx_h + ix.to(tl.int64) * sx_w
        for c0 in range(0, C_in, BLOCK_K):
            c = c0 + tl.arange(0, BLOCK_K)
            c_mask = c < C_in
            a = tl.load(x_ptr + pix[:, None] + c[None, :].to(tl.int64) * sx_c,
                        mask=on[:, None] & c_mask[None, :], other=0.0)
            w = tl.load(w_ptr + (t * C_in + c[:, None]).to(tl.int64) * C_out + n[None, :],
                        mask=c_mask[:, None] & n_mask[None, :], other=0.0)
            acc = _mma(acc, a, w, DOT_PRECISION, UPCAST)
    if RENORM:
        acc = acc * tl.where(count > 0, (KSIZE * KSIZE) / tl.maximum(count, 1.0), 0.0)[:, None]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + n, mask=n_mask, other=0.0).to(ACC)[None, :]
    out = b64 * sy_b + oy.to(tl.int64) * sy_h + ox.to(tl.int64) * sy_w
    tl.store(y_ptr + out[:, None] + n[None, :].to(tl.int64) * sy_c, acc.to(y_ptr.dtype.element_ty),
             mask=m_mask[:, None] & n_mask[None, :])


# ---------------------------------------------------------------------------
# Input gradient
# ---------------------------------------------------------------------------


@triton.jit
def _backward_input_kernel(
    dy_ptr,  # *T   [B, C_out, Ho, Wo] output gradient
    inst_ptr,  # *int [B, H, W] instance ids
    w_ptr,  # *T   [k², C_out, C_in] weight, tap-major
    scale_ptr,  # *ACC [B, Ho, Wo] renorm scale (unused without RENORM)
    dx_ptr,  # *T   [B, C_in, H, W] input gradient
    M, C_in, C_out, H, W, H_out, W_out, stride, pad,
    sd_b, sd_c, sd_h, sd_w,  # strides of dy
    sx_b, sx_c, sx_h, sx_w,  # strides of dx
    KSIZE: tl.constexpr,
    RENORM: tl.constexpr,
    ACC: tl.constexpr,  # accumulator type: float32, or float64 for float64 x
    BLOCK_M: tl.constexpr,  # input pixels per program
    BLOCK_N: tl.constexpr,  # input channels per program
    BLOCK_K: tl.constexpr,  # output channels per dot
    DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,  # float32 operands for tl.dot (bfloat16 in the interpreter)
):
    # Input pixel (iy, ix) is tap (u, v) of output (oy, ox) when oy·s − p + u = iy:
    # it receives dy of that window where its id equals the window's centre id.
    pid_m, pid_n = tl.program_id(0), tl.program_id(1)
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_mask, n_mask = m < M, n < C_in
    b64, iy, ix, _y, _x = _window(m, H, W, 1, 0)
    own = tl.load(inst_ptr + b64 * H * W + iy * W + ix, mask=m_mask, other=0)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
    for t in range(0, KSIZE * KSIZE):
        ty, tx = iy + pad - t // KSIZE, ix + pad - t % KSIZE
        oy, ox = ty // stride, tx // stride
        valid = m_mask & (ty >= 0) & (tx >= 0) & (ty % stride == 0) & (tx % stride == 0)
        valid = valid & (oy < H_out) & (ox < W_out)
        centre, _c = _id_at(inst_ptr, b64, oy * stride - pad + KSIZE // 2, ox * stride - pad + KSIZE // 2, H, W, valid)
        on = valid & (own == centre)
        out_pix = oy.to(tl.int64) * W_out + ox
        if RENORM:
            scale = tl.load(scale_ptr + b64 * H_out * W_out + out_pix, mask=on, other=0.0)
        pix = b64 * sd_b + oy.to(tl.int64) * sd_h + ox.to(tl.int64) * sd_w
        for o0 in range(0, C_out, BLOCK_K):
            o = o0 + tl.arange(0, BLOCK_K)
            o_mask = o < C_out
            g = tl.load(dy_ptr + pix[:, None] + o[None, :].to(tl.int64) * sd_c,
                        mask=on[:, None] & o_mask[None, :], other=0.0)
            if RENORM:
                g = (g.to(ACC) * scale[:, None]).to(dy_ptr.dtype.element_ty)
            w = tl.load(w_ptr + (t * C_out + o[:, None]).to(tl.int64) * C_in + n[None, :],
                        mask=o_mask[:, None] & n_mask[None, :], other=0.0)
            acc = _mma(acc, g, w, DOT_PRECISION, UPCAST)
    out = b64 * sx_b + iy.to(tl.int64) * sx_h + ix.to(tl.int64) * sx_w
    tl.store(dx_ptr + out[:, None] + n[None, :].to(tl.int64) * sx_c, acc.to(dx_ptr.dtype.element_ty),
             mask=m_mask[:, None] & n_mask[None, :])


# ---------------------------------------------------------------------------
# Weight gradient
# ---------------------------------------------------------------------------


@triton.jit
def _backward_weight_kernel(
    dy_ptr,  # *T   [B, C_out, Ho, Wo] output gradient
    x_ptr,  # *T   [B, C_in, H, W] input
    inst_ptr,  # *int [B, H, W] instance ids
    scale_ptr,  # *ACC [B, Ho, Wo] renorm scale (unused without RENORM)
    part_ptr,  # *ACC [S, k², C_out, C_in] out: partial sums of each split of the pixels
    M, C_in, C_out, H, W, H_out, W_out, stride, pad,
    sd_b, sd_c, sd_h, sd_w,  # strides of dy
    sx_b, sx_c, sx_h, sx_w,  # strides of x
    tiles_per_prog,  # pixel tiles each program reduces
    KSIZE: tl.constexpr,
    RENORM: tl.constexpr,
    BLOCK_O: tl.constexpr,  # output channels per program
    BLOCK_C: tl.constexpr,  # input channels per program
    BLOCK_M: tl.constexpr,  # output pixels per dot
    DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,  # float32 operands for tl.dot (bfloat16 in the interpreter)
):
    # Grid: (C_out blocks · C_in blocks, k², splits). One tap per program, so the
    # mask of a pixel tile is one comparison per pixel.
    pid, t, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    n_o_blocks = tl.cdiv(C_out, BLOCK_O)
    o = (pid % n_o_blocks) * BLOCK_O + tl.arange(0, BLOCK_O)
    c = (pid // n_o_blocks) * BLOCK_C + tl.arange(0, BLOCK_C)
    o_mask, c_mask = o < C_out, c < C_in
    u, v = t // KSIZE, t % KSIZE
    acc = tl.zeros([BLOCK_O, BLOCK_C], dtype=part_ptr.dtype.element_ty)
    for i in range(0, tiles_per_prog):
        m = (split * tiles_per_prog + i) * BLOCK_M + tl.arange(0, BLOCK_M)
        m_mask = m < M
        b64, oy, ox, y0, x0 = _window(m, H_out, W_out, stride, pad)
        centre, _ = _id_at(inst_ptr, b64, y0 + KSIZE // 2, x0 + KSIZE // 2, H, W, m_mask)
        ids, inside = _id_at(inst_ptr, b64, y0 + u, x0 + v, H, W, m_mask)
        on = inside & (ids == centre)
        out_pix = b64 * sd_b + oy.to(tl.int64) * sd_h + ox.to(tl.int64) * sd_w
        g = tl.load(dy_ptr + out_pix[None, :] + o[:, None].to(tl.int64) * sd_c,
                    mask=o_mask[:, None] & m_mask[None, :], other=0.0)
        pix = b64 * sx_b + (y0 + u).to(tl.int64) * sx_h + (x0 + v).to(tl.int64) * sx_w
        a = tl.load(x_ptr + pix[:, None] + c[None, :].to(tl.int64) * sx_c,
                    mask=on[:, None] & c_mask[None, :], other=0.0)
        if RENORM:
            scale = tl.load(scale_ptr + m, mask=on, other=0.0)
            a = (a.to(acc.dtype) * scale[:, None]).to(x_ptr.dtype.element_ty)
        acc = _mma(acc, g, a, DOT_PRECISION, UPCAST)
    part = ((split * KSIZE * KSIZE + t) * C_out + o[:, None]).to(tl.int64) * C_in + c[None, :]
    tl.store(part_ptr + part, acc, mask=o_mask[:, None] & c_mask[None, :])


# ---------------------------------------------------------------------------
# Launchers: torch tensors in, torch tensors out. Inputs are validated by
# inade.ops.instance_conv2d before they get here.
# ---------------------------------------------------------------------------

_BLOCK_M = 64
_SCALE_BLOCK = 256
# Warps and the weight-gradient pixel tile from the static resource report (bench/results/aot):
# with 4 warps, or 64-pixel weight-gradient tiles, float32 (tf32x3) tiles spill on sm_80/sm_90.
_FORWARD_NUM_WARPS = 8
_WEIGHT_BLOCK_M, _WEIGHT_NUM_WARPS = 32, 8


def _block(n: int, cap: int) -> int:
    """A power-of-two block for a dimension of size ``n``: at least 16 (``tl.dot``), at most ``cap``."""
    return max(16, min(cap, triton.next_power_of_2(n)))


def _dot_options(x: torch.Tensor) -> dict:
    """The ``tl.dot`` constexprs of every conv kernel for input ``x`` (``_launch``'s policy)."""
    upcast = _launch.upcast(x.dtype, x.device)
    operands = torch.float32 if upcast else x.dtype
    return {"DOT_PRECISION": _launch.dot_precision(operands, x.device), "UPCAST": upcast}


def _geometry(x: torch.Tensor, k: int, stride: int, padding: int) -> tuple[int, int, int]:
    """(pixels B·Ho·Wo, Ho, Wo); raises where pixel indices would not fit in int32."""
    B, _, H, W = x.shape
    h_out, w_out = (H + 2 * padding - k) // stride + 1, (W + 2 * padding - k) // stride + 1
    if B * H * W >= 2**31 or B * h_out * w_out >= 2**31:
        raise ValueError(f"instance_conv2d (triton) needs B·H·W < 2^31, got x {tuple(x.shape)}")
    return B * h_out * w_out, h_out, w_out


def renorm_scale(inst: torch.Tensor, k: int, stride: int, padding: int, h_out: int, w_out: int,
                 dtype: torch.dtype) -> torch.Tensor:
    """``k² / (taps that count)`` of every window, 0 where none: ``[B, Ho, Wo]`` in ``dtype``
    (the accumulator dtype)."""
    B, H, W = inst.shape
    scale = torch.empty(B, h_out, w_out, device=inst.device, dtype=dtype)
    M = scale.numel()
    _renorm_scale_kernel[(triton.cdiv(M, _SCALE_BLOCK),)](
        inst, scale, M, H, W, h_out, w_out, stride, padding, KSIZE=k, BLOCK=_SCALE_BLOCK
    )
    return scale


def forward(x, inst, weight, bias, stride: int, padding: int, renorm: bool) -> torch.Tensor:
    """``y [B, C_out, Ho, Wo]``, dtype and layout of ``x``."""
    B, C_in, H, W = x.shape
    C_out, k = weight.shape[0], weight.shape[-1]
    M, h_out, w_out = _geometry(x, k, stride, padding)
    y = torch.empty(B, C_out, h_out, w_out, device=x.device, dtype=x.dtype, memory_format=_checks.memory_format_of(x))
    w_taps = weight.permute(2, 3, 1, 0).contiguous()  # [k, k, C_in, C_out]
    block_n, block_k = _block(C_out, 64), _block(C_in, 32)
    grid = (triton.cdiv(M, _BLOCK_M), triton.cdiv(C_out, block_n))
    _forward_kernel[grid](
        x, inst, w_taps, bias if bias is not None else w_taps, y, M, C_in, C_out, H, W, h_out, w_out, stride,
        padding, *_launch.strides4(x), *_launch.strides4(y), KSIZE=k, HAS_BIAS=bias is not None, RENORM=renorm,
        ACC=_launch.acc_type(x.dtype), BLOCK_M=_BLOCK_M, BLOCK_N=block_n, BLOCK_K=block_k, **_dot_options(x),
        num_warps=_FORWARD_NUM_WARPS,
    )
    return y


def backward_input(dy, x, inst, weight, stride: int, padding: int, renorm: bool) -> torch.Tensor:
    """Gradient of ``x``: shape, dtype and layout of ``x``."""
    B, C_in, H, W = x.shape
    C_out, k = weight.shape[0], weight.shape[-1]
    _, h_out, w_out = _geometry(x, k, stride, padding)
    dx = torch.empty_like(x, memory_format=_checks.memory_format_of(x))
    w_taps = weight.permute(2, 3, 0, 1).contiguous()  # [k, k, C_out, C_in]
    scale = renorm_scale(inst, k, stride, padding, h_out, w_out, _checks.acc_dtype(x.dtype)) if renorm else w_taps
    M = B * H * W
    block_n, block_k = _block(C_in, 64), _block(C_out, 32)
    grid = (triton.cdiv(M, _BLOCK_M), triton.cdiv(C_in, block_n))
    _backward_input_kernel[grid](
        dy, inst, w_taps, scale, dx, M, C_in, C_out, H, W, h_out, w_out, stride, padding, *_launch.strides4(dy),
        *_launch.strides4(dx), KSIZE=k, RENORM=renorm, ACC=_launch.acc_type(x.dtype), BLOCK_M=_BLOCK_M,
        BLOCK_N=block_n, BLOCK_K=block_k, **_dot_options(x),
    )
    return dx


def backward_weight(dy, x, inst, kernel_size: int, stride: int, padding: int, renorm: bool) -> torch.Tensor:
    """Gradient of the weight: ``[C_out, C_in, k, k]`` contiguous, dtype of ``x`` (float32 sums)."""
    B, C_in, H, W = x.shape
    C_out, k = dy.shape[1], kernel_size
    M, h_out, w_out = _geometry(x, k, stride, padding)
    acc = _checks.acc_dtype(x.dtype)
    scale = renorm_scale(inst, k, stride, padding, h_out, w_out, acc) if renorm else dy
    block_o, block_c = _block(C_out, 64), _block(C_in, 64)
    blocks = triton.cdiv(C_out, block_o) * triton.cdiv(C_in, block_c)
    n_splits, tiles_per_prog = _launch.split_reduction(triton.cdiv(M, _WEIGHT_BLOCK_M), blocks * k * k, x.device)
    part = torch.empty(n_splits, k * k, C_out, C_in, device=x.device, dtype=acc)
    _backward_weight_kernel[(blocks, k * k, n_splits)](
        dy, x, inst, scale, part, M, C_in, C_out, H, W, h_out, w_out, stride, padding, *_launch.strides4(dy),
        *_launch.strides4(x), tiles_per_prog, KSIZE=k, RENORM=renorm, BLOCK_O=block_o, BLOCK_C=block_c,
        BLOCK_M=_WEIGHT_BLOCK_M, **_dot_options(x), num_warps=_WEIGHT_NUM_WARPS,
    )
    dw = part.sum(0).view(k, k, C_out, C_in).permute(2, 3, 0, 1)
    return dw.to(x.dtype).contiguous()

