"""Stride-1 convolutions as matrix products, for the CPU shapes where oneDNN is slow.

oneDNN's direct convolution runs far below its usual speed for two kinds of layers in the
generator (measured on a 2-core AVX-512 CPU, torch 2.13, forward+backward, batch 1):

* 1×1 convolutions (the learned shortcuts ``conv_s``): 128 → 64 channels at 256×256 takes
  64 ms, one matrix product per direction 26 ms; 256 → 128 at 128×128 32 → 14 ms.
* wide 3×3 convolutions with few output positions (``head_0`` and ``G_middle`` at 8×8 and
  16×16): 1024 → 1024 channels, 73 → 35 ms at 8×8 and 98 → 63 ms at 16×16 through unfold + GEMM;
  at 1024 positions (batch × H × W) the two are even and above it oneDNN wins. Narrower layers
  lose: 768 input channels at 16×16 still gain (44 → 35 ms), 512 do not (14 → 16 ms).

:func:`conv2d` picks the matrix-product path for those shapes (float32/64 on CPU, outside
autocast — oneDNN's bfloat16 kernels are the fast ones there — and outside ``torch.compile``)
and ``F.conv2d`` otherwise; :func:`conv2d_backward` is the matching backward for autograd
functions that compute their own gradients.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# The 3×3 layers that go through unfold + GEMM: at most this many output positions (batch × H × W)
# and at least this many input channels (see the module docstring).
GEMM_CONV_MAX_POSITIONS = 512
GEMM_CONV_MIN_CHANNELS = 768


def gemm_conv_wins(x: Tensor, weight: Tensor) -> bool:
    """Whether :func:`conv2d` takes the matrix-product path for input ``x [B, C, H, W]`` and
    ``weight [O, C, k, k]``."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or weight.dtype != x.dtype:
        return False
    if not x.is_contiguous() or torch.is_autocast_enabled("cpu") or torch.compiler.is_compiling():
        return False
    if weight.shape[-1] == 1:
        return True
    return x.shape[0] * x.shape[2] * x.shape[3] <= GEMM_CONV_MAX_POSITIONS and x.shape[1] >= GEMM_CONV_MIN_CHANNELS


def _columns(x: Tensor, k: int, padding: int) -> Tensor:
    """``[B, C·k·k, H'·W']``: the input patches (a view of ``x`` for 1×1 without padding)."""
    if k == 1 and padding == 0:
        return x.reshape(x.shape[0], x.shape[1], -1)
    return F.unfold(x, k, padding=padding)


def gemm_conv_forward(x: Tensor, weight: Tensor, bias: Tensor | None, padding: int) -> Tensor:
    """``F.conv2d(x, weight, bias, padding=padding)`` (stride 1) as ``weight · columns(x)``, without
    autograd (it writes into its output: call it on tensors that do not require grad, as
    :func:`conv2d` does). ``x [B, C, H, W]``, ``weight [O, C, k, k]`` -> ``[B, O, H', W']``."""
    B, _, H, W = x.shape
    k = weight.shape[-1]
    w2 = weight.reshape(weight.shape[0], -1)
    cols = _columns(x, k, padding)
    y = x.new_empty(B, w2.shape[0], cols.shape[2])
    for b in range(B):  # one product per image: torch.matmul would copy a broadcast operand
        if bias is None:
            torch.mm(w2, cols[b], out=y[b])
        else:
            torch.addmm(bias[:, None], w2, cols[b], out=y[b])
    return y.view(B, weight.shape[0], H + 2 * padding - k + 1, W + 2 * padding - k + 1)


def gemm_conv_backward(g: Tensor, x: Tensor, weight: Tensor, padding: int, need_x: bool, need_w: bool):
    """``(dx, dweight)`` of :func:`gemm_conv_forward` without bias for output gradient ``g
    [B, O, H', W']`` (``None`` where not needed). The columns are recomputed rather than saved:
    unfolding costs a few ms at the shapes this path takes, saving them k² times x's memory."""
    B, C, H, W = x.shape
    k = weight.shape[-1]
    g2 = g.reshape(B, g.shape[1], -1)
    w2 = weight.reshape(weight.shape[0], -1)
    dx = dw = None
    if need_w:
        cols = _columns(x, k, padding)
        dw = torch.mm(g2[0], cols[0].t())  # written once, no zero fill
        for b in range(1, B):
            dw.addmm_(g2[b], cols[b].t())
        dw = dw.view_as(weight)
    if need_x:
        dcols = x.new_empty(B, w2.shape[1], g2.shape[2])
        for b in range(B):
            torch.mm(w2.t(), g2[b], out=dcols[b])
        dx = dcols.view(B, C, H, W) if k == 1 and padding == 0 else F.fold(dcols, (H, W), k, padding=padding)
    return dx, dw


class _GemmConv(torch.autograd.Function):
    """Autograd node of :func:`gemm_conv_forward`."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding: int):
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.has_bias = padding, bias is not None
        return gemm_conv_forward(x, weight, bias, padding)

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        dx, dw = gemm_conv_backward(g, x, weight, ctx.padding, need_x, need_w)
        db = g.sum((0, 2, 3)) if need_b and ctx.has_bias else None
        return dx, dw, db, None


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, padding: int) -> Tensor:
    """``F.conv2d(x, weight, bias, padding=padding)`` (stride 1) through whichever CPU kernel is
    faster for the shape (:func:`gemm_conv_wins`). ``x [B, C, H, W]``, ``weight [O, C, k, k]``,
    ``bias [O]`` or ``None`` -> ``[B, O, H', W']`` in x's dtype; differentiable."""
    if gemm_conv_wins(x, weight):
        return _GemmConv.apply(x, weight, bias, padding)
    return F.conv2d(x, weight, bias, padding=padding)


def conv2d_backward(g: Tensor, x: Tensor, weight: Tensor, padding: int, need_x: bool, need_w: bool):
    """``(dx, dweight)`` of :func:`conv2d` without bias (``None`` where not needed), through the
    same kernel choice as its forward."""
    if gemm_conv_wins(x, weight):
        return gemm_conv_backward(g, x, weight, padding, need_x, need_w)
    dx, dw, _ = torch.ops.aten.convolution_backward(
        g, x, weight, None, [1, 1], [padding, padding], [1, 1], False, [0, 0], 1, [need_x, need_w, False])
    return dx, dw
