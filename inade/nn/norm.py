"""The INADE normalization layer (paper §3.1–3.3, Eq. 1–3, 5)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from inade.ops import instance_modulation


class INADENorm(nn.Module):
    """Instance-adaptive denormalization.

    Each class ``m`` owns a distribution of modulation parameters, an affine map of
    a normal noise: ``γ = a_γ[m] ⊙ F(N_γ) + b_γ[m]`` and ``β = a_β[m] ⊙ F(N_β) + b_β[m]``
    (Eq. 2–3), where ``F`` is this layer's linear map from the shared noise
    (``noise_nc`` = C⁰ channels) to its ``C`` channels. Each instance is one sample:
    its row of the noise ``[B, L, 2, noise_nc]`` (index 0 for γ, 1 for β) is shared by
    every layer (unified sampling, §3.3). The activations are batch-normalised
    without affine and modulated per instance by :func:`inade.ops.instance_modulation`.

    Parameter names follow the public code, so its checkpoints load: ``weight`` is
    ``a`` and ``bias`` is ``b``, both ``[label_nc, C, 2]`` (last axis γ, β);
    ``param_free_norm`` holds the running statistics; ``fc_noise`` is ``F``.
    Like the public code, the output is ``γ·x̂ + β`` (no ``1 +``).

    Sketch input (the public code's ``--add_sketch``, its 2021-12 update): with
    ``add_sketch`` the modulated output ``o`` is merged with an edge map ``s``
    ``[B, 1, H, W]`` (values in ``[0, 1]``) as ``merge_conv(o ⊕ sketch_conv(s))`` —
    ``sketch_conv`` 3×3 ``1 → C`` with bias, ``merge_conv`` 1×1 ``2C → C`` without (the
    public code's keys). It is computed without the concatenation: the half of
    ``merge_conv`` that reads the sketch features is folded into ``sketch_conv``.

    Args:
        num_channels: ``C``.
        label_nc: ``L_m``, rows of the class tables (classes, with the don't-care class if any).
        noise_nc: ``C⁰``, channels of the shared noise.
        eps, momentum: of the batch norm.
        add_sketch: add ``sketch_conv`` and ``merge_conv`` and take a sketch in ``forward``.

    Attributes:
        process_group: set to a ``torch.distributed`` group to synchronise the batch
            statistics across processes (the paper trains with synchronised BN).
    """

    def __init__(self, num_channels: int, label_nc: int, noise_nc: int, eps: float = 1e-5, momentum: float = 0.1,
                 add_sketch: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(label_nc, num_channels, 2))
        self.bias = nn.Parameter(torch.empty(label_nc, num_channels, 2))
        self.param_free_norm = nn.BatchNorm2d(num_channels, eps=eps, momentum=momentum, affine=False)
        self.fc_noise = nn.Linear(noise_nc, num_channels)
        self.add_sketch = add_sketch
        if add_sketch:
            self.sketch_conv = nn.Conv2d(1, num_channels, kernel_size=3, padding=1)
            self.merge_conv = nn.Conv2d(2 * num_channels, num_channels, kernel_size=1, bias=False)
        self.process_group = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``a`` uniform in [0, 1) and ``b`` zero, as the public code initialises them."""
        nn.init.uniform_(self.weight)
        nn.init.zeros_(self.bias)

    def tables(self, cls: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-instance ``γ, β`` tables ``[B, L, C]`` (Eq. 2–3).

        Args:
            cls: ``[B, L]`` int class of each instance.
            noise: ``[B, L, 2, noise_nc]`` shared noise (already remapped by the encoder, Eq. 5).
        """
        mapped = self.fc_noise(noise)  # [B, L, 2, C]
        a, b = self.weight[cls], self.bias[cls]  # [B, L, C, 2]
        gamma = a[..., 0] * mapped[:, :, 0] + b[..., 0]
        beta = a[..., 1] * mapped[:, :, 1] + b[..., 1]
        return gamma, beta

    def forward(self, x: torch.Tensor, inst: torch.Tensor, cls: torch.Tensor, noise: torch.Tensor,
                sketch: torch.Tensor | None = None) -> torch.Tensor:
        """Args:
            x: ``[B, C, H, W]`` activations.
            inst: ``[B, H, W]`` compact instance ids at x's resolution (see :func:`resize_index_map`).
            cls: ``[B, L]`` class of each instance (see :func:`instance_classes`).
            noise: ``[B, L, 2, noise_nc]``.
            sketch: ``[B, 1, H, W]`` edge map at x's resolution; required with ``add_sketch``,
                refused without.

        Returns:
            ``[B, C, H, W]``, dtype of ``x``.
        """
        out = self.modulate(x, inst, cls, noise)
        if not self.add_sketch:
            if sketch is not None:
                raise ValueError("this norm has no sketch branch (add_sketch=False) but a sketch was given")
            return out
        if sketch is None:
            raise ValueError("this norm was built with add_sketch=True: pass the sketch [B, 1, H, W]")
        return self.merge_sketch(out, sketch)

    def merge_sketch(self, out: torch.Tensor, sketch: torch.Tensor) -> torch.Tensor:
        """``merge_conv(out ⊕ sketch_conv(sketch))`` without the concatenation:
        ``W_o ∗ out + (W_s·K) ∗ sketch + W_s·b`` for ``merge_conv = [W_o | W_s]`` and
        ``sketch_conv = (K, b)``."""
        c = out.shape[1]
        if tuple(sketch.shape) != (out.shape[0], 1, *out.shape[2:]):
            raise ValueError(f"sketch must be [B, 1, H, W] = {[out.shape[0], 1, *out.shape[2:]]}, got {tuple(sketch.shape)}")
        merge = self.merge_conv.weight[:, :, 0, 0]  # [C, 2C]
        w_out, w_sketch = merge[:, :c], merge[:, c:]
        kernel = torch.einsum("oc,cikl->oikl", w_sketch, self.sketch_conv.weight)  # [C, 1, 3, 3]
        bias = w_sketch @ self.sketch_conv.bias
        y = F.conv2d(out, w_out[:, :, None, None].to(out.dtype))
        return y + F.conv2d(sketch.to(out.dtype), kernel.to(out.dtype), bias.to(out.dtype), padding=1)

    def modulate(self, x: torch.Tensor, inst: torch.Tensor, cls: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The INADE modulation ``γ[inst]·x̂ + β[inst]`` (no sketch); arguments as :meth:`forward`."""
        if noise.dim() != 4 or noise.shape[2] != 2 or noise.shape[:2] != cls.shape:
            raise ValueError(
                f"noise must be [B, L, 2, noise_nc] with [B, L] = cls.shape {tuple(cls.shape)}, "
                f"got {tuple(noise.shape)}"
            )
        gamma, beta = self.tables(cls, noise)
        bn = self.param_free_norm
        training = bn.training or bn.running_mean is None
        momentum = bn.momentum
        if training and bn.track_running_stats:
            bn.num_batches_tracked.add_(1)
            if momentum is None:  # cumulative average, as nn.BatchNorm2d
                momentum = 1.0 / float(bn.num_batches_tracked)
        return instance_modulation(
            x,
            inst,
            gamma.to(x.dtype),
            beta.to(x.dtype),
            running_mean=bn.running_mean,
            running_var=bn.running_var,
            training=training,
            momentum=momentum,
            eps=bn.eps,
            process_group=self.process_group,
        )

    def extra_repr(self) -> str:
        label_nc, c, _ = self.weight.shape
        s = f"num_channels={c}, label_nc={label_nc}, noise_nc={self.fc_noise.in_features}"
        return s + (", add_sketch=True" if self.add_sketch else "")
