"""The generator and the encoder as graphs of standard operators, for ONNX and AOTInductor.

:class:`GeneratorGraph` computes ``G(label, inst, noise, z)`` of an eval-mode
:class:`inade.Generator` (its own parameters, read from it) with nothing a graph
format cannot hold:

* no values are read (no input checks, no ``inst.max()``): the number of instances ``L``
  is the size of ``noise``'s axis 1, the batch ``B`` that of ``label``;
* spectral norms are folded: each ``SpectralNormConv2d`` becomes a plain convolution with
  weight ``W_orig / σ``, ``σ = uᵀ W_orig v`` from the stored ``u``, ``v`` (eval mode);
* the INADE norm (paper Eq. 1–3) is written per pixel, as the public code computes it:
  ``γ[b, :, h, w] = a_γ[label] ⊙ F_γ(N_γ[b, inst]) + b_γ[label]`` (likewise β) on
  ``x̂ = (x − running_mean) / √(running_var + ε)``, with two row gathers
  (``Gather`` in ONNX) per norm: one by ``b·L + inst`` from the ``[B·L, 2C]`` mapped noise,
  one by ``label`` from the ``[num_classes, 4C]`` class tables. An instance id whose
  pixels lie in several classes is one noise row modulated by each pixel's class, which
  is what the eager generator computes too (there through its class-pure parts), and the
  graph's shapes do not depend on the map's values.

:class:`EncoderGraph` is :class:`inade.NoiseEncoder` followed by the remapping
``N·exp(½·logvar) + μ`` (:func:`inade.models.generator.remap_noise`): it turns a
reference image and drawn noise into the ``noise`` input of the generator graph. It is
traced through the encoder's own forward; its two instance-aware ops are custom ops
there, replaced by their reference passes (:data:`DECOMPOSITIONS`) when exported.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from inade.models.generator import Generator, remap_noise
from inade.nn import NEG_SLOPE, SpectralNormConv2d, resize_index_map
from inade.ops import reference
from inade.ops._checks import acc_dtype


def folded_conv(conv: nn.Module) -> nn.Conv2d:
    """An ``nn.Conv2d`` computing what ``conv`` computes in eval mode: a copy of an
    ``nn.Conv2d``, or for a :class:`SpectralNormConv2d` a conv whose weight is ``W_orig / σ``
    (the spectral norm folded in; ``σ`` from the stored power-iteration vectors)."""
    if isinstance(conv, SpectralNormConv2d):
        weight = conv.compute_weight(power_iteration=False).detach()
        k, p = conv.kernel_size, conv.padding
    elif type(conv) is nn.Conv2d:
        weight, k, p = conv.weight.detach(), conv.kernel_size[0], conv.padding[0]
        if conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1 or isinstance(p, str):
            raise ValueError(f"folded_conv takes stride-1 dense convolutions, got {conv}")
    else:
        raise TypeError(f"folded_conv takes nn.Conv2d or SpectralNormConv2d, got {type(conv).__name__}")
    out = nn.Conv2d(weight.shape[1], weight.shape[0], k, padding=p, bias=conv.bias is not None,
                    device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        out.weight.copy_(weight)
        if conv.bias is not None:
            out.bias.copy_(conv.bias)
    return out.requires_grad_(False)


class NormGraph(nn.Module):
    """One :class:`inade.nn.INADENorm` in eval mode, per pixel (see the module docstring).

    Holds ``fc_noise`` (``F``), the class tables ``[num_classes, 4C]`` (``a_γ | b_γ | a_β | b_β``),
    the running statistics as ``shift = −mean·s`` and ``scale = s = 1/√(var + ε)``, and the
    norm itself for its sketch branch.
    """

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.fc_noise = norm.fc_noise
        a, b = norm.weight.detach(), norm.bias.detach()  # [K, C, 2]
        self.register_buffer("classes", torch.cat([a[..., 0], b[..., 0], a[..., 1], b[..., 1]], 1).contiguous())
        bn = norm.param_free_norm
        scale = torch.rsqrt(bn.running_var.detach() + bn.eps)
        self.register_buffer("scale", scale[:, None, None].clone())
        self.register_buffer("shift", (-bn.running_mean.detach() * scale)[:, None, None].clone())
        self.norm = norm if norm.add_sketch else None

    def forward(self, x: Tensor, rows: Tensor, label: Tensor, noise: Tensor, sketch: Tensor | None) -> Tensor:
        """``x [B, C, h, w]``; ``rows``, ``label`` ``[B, h, w]`` (``b·L + inst`` and the class at x's
        resolution); ``noise [B, L, 2, noise_nc]``; ``sketch [B, 1, h, w]`` or ``None`` -> ``[B, C, h, w]``."""
        B, C, h, w = x.shape
        mapped = self.fc_noise(noise).reshape(-1, 2 * C)  # [B·L, 2C]: F(N_γ) | F(N_β)
        n = mapped.index_select(0, rows.reshape(-1)).view(B, h, w, 2 * C).permute(0, 3, 1, 2)
        t = self.classes.index_select(0, label.reshape(-1)).view(B, h, w, 4 * C).permute(0, 3, 1, 2)
        gamma = t[:, :C] * n[:, :C] + t[:, C:2 * C]
        beta = t[:, 2 * C:3 * C] * n[:, C:] + t[:, 3 * C:]
        out = (x * self.scale + self.shift) * gamma + beta
        return out if self.norm is None else self.norm.merge_sketch(out, sketch)


class BlockGraph(nn.Module):
    """One :class:`inade.models.generator.INADEResnetBlock` with folded convolutions."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.learned_shortcut = block.learned_shortcut
        self.conv_0, self.conv_1 = folded_conv(block.conv_0), folded_conv(block.conv_1)
        self.norm_0, self.norm_1 = NormGraph(block.norm_0), NormGraph(block.norm_1)
        if self.learned_shortcut:
            self.conv_s, self.norm_s = folded_conv(block.conv_s), NormGraph(block.norm_s)

    def forward(self, x: Tensor, *maps) -> Tensor:
        """``x [B, fin, h, w]``, ``maps`` as :meth:`NormGraph.forward` after ``x`` -> ``[B, fout, h, w]``."""
        x_s = self.conv_s(self.norm_s(x, *maps)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, *maps), NEG_SLOPE))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, *maps), NEG_SLOPE))
        return x_s + dx


class GeneratorGraph(nn.Module):
    """``G(label, inst, noise, z[, sketch])`` of ``G`` in eval mode, in standard operators.

    Inputs (the same as :meth:`inade.Generator.forward`'s, all required; nothing is drawn):
    ``label [B, H, W]`` int64 classes, ``inst [B, H, W]`` int64 ids ``0 … L-1``, ``noise
    [B, L, 2, noise_nc]`` float32 (index 0 γ, 1 β), ``z [B, z_dim]`` float32, and ``sketch
    [B, 1, H, W]`` for a model built with ``add_sketch``. ``(H, W)`` is ``cfg.output_size``.
    Output: ``[B, 3, H, W]`` in ``(-1, 1)``.

    Nothing is checked: a class outside ``[0, num_classes)`` or an id outside ``[0, L)`` is
    an out-of-range gather (an error in onnxruntime). ``G`` is read at construction (its
    weights are shared, the folded convolutions are copies).
    """

    def __init__(self, G: Generator):
        super().__init__()
        cfg = G.cfg
        self.cfg = cfg
        self.sh, self.sw, self.nf = G.sh, G.sw, cfg.ngf
        self.fc = G.fc
        self.upsample = [up for _, up in G.blocks()]
        self.blocks = nn.ModuleList(BlockGraph(block) for block, _ in G.blocks())
        self.conv_img = folded_conv(G.conv_img)
        self.add_sketch = bool(getattr(cfg, "add_sketch", False))

    def forward(self, label: Tensor, inst: Tensor, noise: Tensor, z: Tensor, sketch: Tensor | None = None) -> Tensor:
        B, L = noise.shape[0], noise.shape[1]
        # Part 1. Per resolution: each pixel's noise row (b·L + inst) and class, nearest from full size.
        rows_full = inst + (torch.arange(B, device=inst.device) * L)[:, None, None]
        levels = {}

        def maps_at(size):
            if size not in levels:
                s = None if sketch is None else F.interpolate(sketch, size=size, mode="nearest")
                levels[size] = (resize_index_map(rows_full, size), resize_index_map(label, size), s)
            return levels[size]

        # Part 2. The main branch.
        x = self.fc(z).view(B, 16 * self.nf, self.sh, self.sw)
        for block, upsample in zip(self.blocks, self.upsample):
            if upsample:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            rows, lab, s = maps_at((int(x.shape[2]), int(x.shape[3])))
            x = block(x, rows, lab, noise, s)
        return torch.tanh(self.conv_img(F.leaky_relu(x, NEG_SLOPE)))


class EncoderGraph(nn.Module):
    """``E(image, inst, noise) -> noise`` remapped by the encoder's per-instance styles:
    ``[B, L, 2, noise_nc]``, index 0 ``N_γ·exp(½·logvar_γ) + μ_γ``, 1 likewise β — the
    ``noise`` input that makes the generator graph follow the reference image (``noise`` of
    zeros gives each instance's mean style). ``image [B, 3, H, W]`` in ``[-1, 1]``, ``inst
    [B, H, W]`` int64 ids ``0 … L-1``, ``noise [B, L, 2, noise_nc]``."""

    def __init__(self, E: nn.Module):
        super().__init__()
        self.E = E

    def forward(self, image: Tensor, inst: Tensor, noise: Tensor) -> Tensor:
        return remap_noise(noise, self.E(image, inst, noise.shape[1]))


def _instance_conv2d_forward(x, inst, weight, bias, stride, padding, renorm):
    return reference.instance_conv2d_forward(x, inst, weight, bias, stride, padding, renorm)


def _instance_avg_pool_forward(x, inst, num_instances):
    """:func:`reference.instance_avg_pool_forward` without its in-place pixel count (a decomposition
    must be functional): the counts are the segment sums of ones."""
    acc = acc_dtype(x.dtype)
    counts = reference.segment_sum(torch.ones_like(inst[:, None], dtype=acc), inst, num_instances)[..., 0]
    means = reference.segment_sum(x.to(acc), inst, num_instances) / counts.clamp(min=1)[..., None]
    return means.to(x.dtype), counts


def _instance_modulation_apply(x, inst, gamma, beta, mean, invstd):
    return reference.instance_modulation_apply(x, inst, gamma, beta, mean, invstd)


#: Our custom ops that an inference graph may hold -> their reference passes (plain PyTorch),
#: which :func:`torch.export.ExportedProgram.run_decompositions` traces into standard operators.
DECOMPOSITIONS = {
    "instance_conv2d_forward": _instance_conv2d_forward,
    "instance_avg_pool_forward": _instance_avg_pool_forward,
    "instance_modulation_apply": _instance_modulation_apply,
}
