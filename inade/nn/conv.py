"""The instance-aware convolution of the noise-remapping encoder (paper §3.4)."""
from __future__ import annotations

import math

import torch
from torch import nn

from inade.ops import instance_conv2d


class InstanceConv2d(nn.Module):
    """Convolution whose taps count only where their pixel belongs to the instance of
    the window's centre pixel, so features never mix across instance borders.

    ``y = instance_conv2d(x, inst, weight, bias, stride, padding, renorm)``; see
    :func:`inade.ops.instance_conv2d` for the exact semantics. The public code's
    encoder uses it with ``k = 3``, ``padding = 1``, ``stride`` 2 (downsampling) or 1,
    and no renormalisation.

    Parameters are named and initialised like ``nn.Conv2d``'s (Kaiming-uniform weight
    with ``a = √5``, bias uniform in ``±1/√fan_in``), so the public code's
    ``InstanceAwareConv2d`` state dicts load unchanged.

    Args:
        in_channels, out_channels: ``C_in``, ``C_out``.
        kernel_size: odd ``k`` (square kernels).
        stride: positive int.
        padding: non-negative int (zero padding of inputs and ids).
        bias: whether to learn a bias (added everywhere, never rescaled).
        renorm: partial-convolution rescaling by ``k² / (taps that count)``.

    Shapes:
        ``x [B, C_in, H, W]``, ``inst [B, H, W]`` integer ids at x's resolution
        (resize with :func:`inade.nn.resize_index_map`) -> ``[B, C_out, Ho, Wo]``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
        renorm: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (the window needs a centre pixel), got {kernel_size}")
        factory = {"device": device, "dtype": dtype}
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding, self.renorm = kernel_size, stride, padding, renorm
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Conv2d``'s initialisation."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_channels * self.kernel_size * self.kernel_size
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, inst: torch.Tensor) -> torch.Tensor:
        return instance_conv2d(x, inst, self.weight, self.bias, self.stride, self.padding, self.renorm)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        s += f", padding={self.padding}"
        if self.bias is None:
            s += ", bias=False"
        if self.renorm:
            s += ", renorm=True"
        return s
