"""A convolution with spectral norm whose normalised weight is computed once in eval mode.

``torch.nn.utils.spectral_norm`` divides the weight by σ on every forward, also in
eval mode, where ``u`` and ``v`` never change: for a generator of ~80 M parameters that
is a full pass over the weights per image. :class:`SpectralNormConv2d` computes the
same weight, but in eval mode keeps it until a parameter or buffer changes.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from inade.nn.gemm_conv import conv2d, conv2d_backward


class _OutputScaledConv(torch.autograd.Function):
    """``conv(x, W) / σ + b`` with ``σ = uᵀ W v`` (``u``, ``v`` constants; ``σ`` given by the caller),
    as one autograd node.

    Backward: the conv's input and weight gradients of ``g / σ``, plus σ's rank-one term
    ``(dL/dσ) · u vᵀ`` added into the weight gradient in place (``addr_``) — autograd would
    build the outer product and add it in two more weight-sized passes.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, u, v, sigma, padding: int):
        y0 = conv2d(x, weight, None, padding)
        ctx.save_for_backward(x, weight, u, v, y0, sigma)
        ctx.padding, ctx.has_bias = padding, bias is not None
        y = y0 / sigma
        return y if bias is None else y + bias[:, None, None]

    @staticmethod
    def backward(ctx, g):
        x, weight, u, v, y0, sigma = ctx.saved_tensors
        p = ctx.padding
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gx, gw = conv2d_backward(g / sigma, x, weight, p, need_x, need_w)
        if need_w:
            gw = gw.contiguous()
            dsigma = -(g * y0).sum() / (sigma * sigma)
            gw.view(gw.shape[0], -1).addr_(u * dsigma, v)
        gb = g.sum((0, 2, 3)) if need_b and ctx.has_bias else None
        return gx, gw, gb, None, None, None, None


class SpectralNormConv2d(nn.Module):
    """``nn.utils.spectral_norm(nn.Conv2d(...))``, the same computation, keys and random draws.

    Training mode: one power iteration per forward (``u``, ``v`` updated in place), then
    ``W = W_orig / σ`` with ``σ = uᵀ W_orig v`` — exactly what ``spectral_norm`` does
    (``eps = 1e-12``, ``dim = 0``), gradients through σ included; where the output is
    smaller than the weight the output is divided by σ instead (the same function).
    Eval mode: ``W_orig / σ`` from the stored ``u``, ``v``, computed once and reused
    until ``weight_orig``, ``weight_u`` or ``weight_v`` is modified (an optimiser step,
    ``load_state_dict``, ``.to()``, an in-place edit) or the module goes back to
    training. Under autocast the cached weight is also kept in the autocast dtype, so
    the cast is not repeated either. Under ``torch.compile`` the weight is computed in
    the graph (no cache; the compiler fuses the division).

    State dict: ``bias``, ``weight_orig``, ``weight_u``, ``weight_v`` (the public
    checkpoints' names). Initialisation draws the conv weight and bias like
    ``nn.Conv2d`` and then ``u``, ``v`` like ``spectral_norm``, in that order.

    Args:
        in_channels, out_channels, kernel_size, padding, bias: as ``nn.Conv2d``
            (square kernel, stride 1).

    Shapes:
        ``[B, in_channels, H, W] -> [B, out_channels, H + 2p - k + 1, W + 2p - k + 1]``.
    """

    eps = 1e-12

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0,
                 bias: bool = True, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.padding = kernel_size, padding
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.weight_orig = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size, **factory))
        self.register_buffer("weight_u", torch.empty(out_channels, **factory))
        self.register_buffer("weight_v", torch.empty(in_channels * kernel_size * kernel_size, **factory))
        self._cache: tuple | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Conv2d``'s init of weight and bias, then ``spectral_norm``'s random unit ``u``, ``v``."""
        nn.init.kaiming_uniform_(self.weight_orig, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_channels * self.kernel_size**2
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)
        with torch.no_grad():
            self.weight_u.copy_(F.normalize(self.weight_u.normal_(0, 1), dim=0, eps=self.eps))
            self.weight_v.copy_(F.normalize(self.weight_v.normal_(0, 1), dim=0, eps=self.eps))

    # -- the weight -------------------------------------------------------------------
    def _power_iteration(self, mat: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One power iteration; returns copies of the new ``u``, ``v`` (so that later in-place
        updates do not touch what autograd saved) and ``W v`` (no gradient), from which
        ``σ = uᵀ W v`` needs no third pass over the weight."""
        with torch.no_grad():
            self.weight_v.copy_(F.normalize(torch.mv(mat.t(), self.weight_u), dim=0, eps=self.eps))
            wv = torch.mv(mat, self.weight_v)
            self.weight_u.copy_(F.normalize(wv, dim=0, eps=self.eps))
        return (self.weight_u.clone(memory_format=torch.contiguous_format),
                self.weight_v.clone(memory_format=torch.contiguous_format), wv)

    def sigma(self, power_iteration: bool) -> Tensor:
        """``σ = uᵀ W_orig v`` (a scalar with gradient to ``weight_orig``), after one power
        iteration if asked."""
        w = self.weight_orig
        mat = w.reshape(w.shape[0], -1)
        u, v = self._power_iteration(mat)[:2] if power_iteration else (self.weight_u, self.weight_v)
        return torch.dot(u, torch.mv(mat, v))

    def compute_weight(self, power_iteration: bool) -> Tensor:
        """``W_orig / σ`` ``[out, in, k, k]``, after one power iteration if asked."""
        return self.weight_orig / self.sigma(power_iteration)

    def _scaled_conv(self, x: Tensor, power_iteration: bool) -> Tensor:
        """``conv(x, W_orig / σ) + bias``, dividing whichever is smaller — the weight or the output
        (``conv(x, W) / σ`` is the same function: the conv is linear in ``W``). The generator's wide
        low-resolution layers have weights ~100× larger than their outputs."""
        w = self.weight_orig
        h = x.shape[2] + 2 * self.padding - self.kernel_size + 1
        wd = x.shape[3] + 2 * self.padding - self.kernel_size + 1
        if w.numel() <= x.shape[0] * self.out_channels * h * wd:
            return conv2d(x, w / self.sigma(power_iteration), self.bias, self.padding)
        mat = w.reshape(w.shape[0], -1)
        if power_iteration:
            u, v, wv = self._power_iteration(mat)
        else:
            u, v = self.weight_u, self.weight_v
            with torch.no_grad():
                wv = torch.mv(mat, v)
        if not torch.is_autocast_enabled(x.device.type):
            return _OutputScaledConv.apply(x, w, self.bias, u, v, torch.dot(u, wv), self.padding)
        sigma = torch.dot(u, torch.mv(mat, v))
        y = F.conv2d(x, w, None, padding=self.padding)
        y = y / sigma.to(y.dtype)
        return y if self.bias is None else y + self.bias.to(y.dtype)[:, None, None]

    def _key(self) -> tuple:
        ts = (self.weight_orig, self.weight_u, self.weight_v)
        cast = torch.get_autocast_dtype(self.weight_orig.device.type) if torch.is_autocast_enabled(
            self.weight_orig.device.type) else None
        return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in ts) + (cast, torch.is_grad_enabled())

    def _eval_weight(self) -> Tensor:
        key = self._key()
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        weight = self.compute_weight(power_iteration=False)
        if key[-2] is not None:
            weight = weight.to(key[-2])
        if not torch.is_grad_enabled():
            self._cache = (key, weight)
        return weight

    @property
    def weight(self) -> Tensor:
        """The normalised weight the forward uses (in training, with the current ``u``, ``v``)."""
        if self.training:
            return self.compute_weight(power_iteration=False)
        return self._eval_weight()

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, C_in, H, W] -> [B, C_out, H', W']``."""
        if self.training:
            self._cache = None
            return self._scaled_conv(x, power_iteration=True)
        if torch.compiler.is_compiling() or torch.is_grad_enabled():
            return self._scaled_conv(x, power_iteration=False)
        return conv2d(x, self._eval_weight(), self.bias, self.padding)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, padding={self.padding}"
        return s + (", bias=False" if self.bias is None else "")
