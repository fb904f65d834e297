"""The multi-scale PatchGAN discriminator (supplementary Fig. 9) and its input.

As in the public code (SPADE's ``MultiscaleDiscriminator``), ``num_D`` identical
PatchGANs look at the input at full, half, quarter … resolution (average pooling,
kernel 3, stride 2, padding 1, padding not counted). Each is ``n_layers_D`` 4×4
convolutions (stride 2, the last of them stride 1, width ``ndf · 2^k`` capped at
512), the inner ones spectral-normed and followed by a parameter-free instance
norm, leaky ReLU 0.2 after each, and a final 4×4 conv to one channel. Every scale
returns the output of each of its ``n_layers_D + 1`` layers: feature matching
(paper Eq. 7) uses the intermediate ones, the hinge loss (Eq. 6) the last.

The input is the label one-hot ⊕ the instance-edge map ⊕ the image
(:func:`discriminator_input`). Module names follow the public code, so its
``latest_net_D.pth`` loads with ``load_state_dict``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from inade.nn import check_integer_map

# Options of the public code's discriminator and their defaults there.
D_DEFAULTS = {"ndf": 64, "num_D": 2, "n_layers_D": 4, "output_nc": 3, "no_instance": False}


def _opt(cfg, name: str):
    return getattr(cfg, name, D_DEFAULTS.get(name))


def semantic_nc(cfg) -> int:
    """Channels of the label one-hot: ``label_nc`` (+1 for the don't-care label)."""
    return int(cfg.label_nc) + (1 if getattr(cfg, "contain_dontcare_label", False) else 0)


def discriminator_input_nc(cfg) -> int:
    """Channels of :func:`discriminator_input`: one-hot + edge map (unless ``no_instance``) + image."""
    return semantic_nc(cfg) + (0 if _opt(cfg, "no_instance") else 1) + int(_opt(cfg, "output_nc"))


# ---------------------------------------------------------------------------
# Input: label one-hot ⊕ instance edges ⊕ image
# ---------------------------------------------------------------------------


def label_one_hot(label: Tensor, num_channels: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``label [B, H, W]`` integer ids -> one-hot ``[B, num_channels, H, W]`` of ``dtype``."""
    check_integer_map(label, "label")
    if label.numel() and (int(label.min()) < 0 or int(label.max()) >= num_channels):
        raise ValueError(
            f"label has ids in [{int(label.min())}, {int(label.max())}] but the one-hot has {num_channels} "
            "channels (label_nc, +1 with contain_dontcare_label): map don't-care pixels to label_nc"
        )
    out = torch.zeros(label.shape[0], num_channels, *label.shape[1:], dtype=dtype, device=label.device)
    return out.scatter_(1, label[:, None].long(), 1.0)


def instance_edges(inst: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Instance boundaries of ``inst [B, H, W]`` -> ``[B, 1, H, W]`` of 0/1 (SPADE's ``get_edges``).

    A pixel is an edge pixel when its id differs from that of a 4-neighbour; both
    pixels of a differing pair are marked.
    """
    check_integer_map(inst, "inst")
    edge = torch.zeros(inst.shape, dtype=torch.bool, device=inst.device)
    dx = inst[:, :, 1:] != inst[:, :, :-1]
    dy = inst[:, 1:, :] != inst[:, :-1, :]
    edge[:, :, 1:] |= dx
    edge[:, :, :-1] |= dx
    edge[:, 1:, :] |= dy
    edge[:, :-1, :] |= dy
    return edge[:, None].to(dtype)


def discriminator_semantics(label: Tensor, inst: Tensor | None, cfg, dtype: torch.dtype = torch.float32) -> Tensor:
    """The conditioning part of the discriminator input: label one-hot ⊕ edge map, ``[B, C_s, H, W]``.

    ``inst`` is ignored (and may be ``None``) when ``cfg.no_instance`` is set.
    """
    parts = [label_one_hot(label, semantic_nc(cfg), dtype)]
    if not _opt(cfg, "no_instance"):
        if inst is None:
            raise ValueError("inst is None but cfg.no_instance is False: pass the instance map (or the label map)")
        if tuple(inst.shape) != tuple(label.shape):
            raise ValueError(f"inst has shape {tuple(inst.shape)} but label has {tuple(label.shape)}")
        parts.append(instance_edges(inst, dtype))
    return torch.cat(parts, dim=1)


def discriminator_input(label: Tensor, inst: Tensor | None, image: Tensor, cfg) -> Tensor:
    """``label, inst: [B, H, W]`` integer maps, ``image: [B, 3, H, W]`` -> ``[B, C_in, H, W]``
    (label one-hot ⊕ instance-edge map ⊕ image, dtype of ``image``)."""
    if not isinstance(image, Tensor) or image.dim() != 4:
        raise ValueError(f"image must be a [B, C, H, W] tensor, got {getattr(image, 'shape', type(image))}")
    if (image.shape[0], *image.shape[2:]) != tuple(label.shape):
        raise ValueError(f"image has shape {tuple(image.shape)} but label has {tuple(label.shape)}")
    return torch.cat([discriminator_semantics(label, inst, cfg, image.dtype), image], dim=1)


# ---------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------


def _init_conv(conv: nn.Conv2d, gain: float = 0.02) -> nn.Conv2d:
    # The public code's init (Xavier-normal, gain 0.02, bias 0), done before the
    # spectral norm wraps the weight.
    nn.init.xavier_normal_(conv.weight, gain=gain)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def _spectral_instance(fin: int, fout: int, kw: int, stride: int, padw: int) -> nn.Sequential:
    """Spectral-normed conv without bias (the instance norm after it would remove one) and a
    parameter-free instance norm: the public code's ``spectralinstance``."""
    conv = _init_conv(nn.Conv2d(fin, fout, kw, stride, padw, bias=False))
    return nn.Sequential(nn.utils.spectral_norm(conv), nn.InstanceNorm2d(fout, affine=False))


class NLayerDiscriminator(nn.Module):
    """One PatchGAN: ``[B, C_in, H, W]`` -> list of ``n_layers_D + 1`` feature maps, the last ``[B, 1, h, w]``."""

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 4):
        super().__init__()
        kw = 4
        padw = math.ceil((kw - 1) / 2)
        nf = ndf
        layers = [nn.Sequential(_init_conv(nn.Conv2d(input_nc, nf, kw, 2, padw)), nn.LeakyReLU(0.2))]
        for n in range(1, n_layers):
            nf_prev, nf = nf, min(nf * 2, 512)
            stride = 1 if n == n_layers - 1 else 2
            layers.append(nn.Sequential(_spectral_instance(nf_prev, nf, kw, stride, padw), nn.LeakyReLU(0.2)))
        layers.append(nn.Sequential(_init_conv(nn.Conv2d(nf, 1, kw, 1, padw))))
        for n, layer in enumerate(layers):
            self.add_module(f"model{n}", layer)

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for layer in self.children():
            x = layer(x)
            features.append(x)
        return features


class Discriminator(nn.Module):
    """Multi-scale PatchGAN of the public code (``num_D`` scales, each an :class:`NLayerDiscriminator`).

    ``Discriminator(cfg)`` reads ``label_nc``, ``contain_dontcare_label`` and, where
    present, ``ndf`` (64), ``num_D`` (2), ``n_layers_D`` (4), ``output_nc`` (3),
    ``no_instance`` (False) from ``cfg``.

    ``forward(x)``: ``x [B, C_in, H, W]`` from :func:`discriminator_input` ->
    ``list`` (one entry per scale, finest first) of ``list`` of feature maps
    (one per layer; the last is the patch logits ``[B, 1, h, w]``).
    """

    def __init__(self, cfg):
        super().__init__()
        self.input_nc = discriminator_input_nc(cfg)
        for i in range(int(_opt(cfg, "num_D"))):
            d = NLayerDiscriminator(self.input_nc, int(_opt(cfg, "ndf")), int(_opt(cfg, "n_layers_D")))
            self.add_module(f"discriminator_{i}", d)

    @staticmethod
    def downsample(x: Tensor) -> Tensor:
        return F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: Tensor) -> list[list[Tensor]]:
        if x.dim() != 4 or x.shape[1] != self.input_nc:
            raise ValueError(
                f"x must be [B, {self.input_nc}, H, W] (label one-hot ⊕ edges ⊕ image, see "
                f"inade.models.discriminator.discriminator_input), got shape {tuple(x.shape)}"
            )
        result = []
        for i, d in enumerate(self.children()):
            if i:
                x = self.downsample(x)
            result.append(d(x))
        return result
