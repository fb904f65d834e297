"""LPIPS v0.1 (Zhang et al. 2018) written in the project, for the paper's diversity metrics.

``d(x0, x1) = Σ_l mean_hw  w_l · (n(f_l(s(x0))) − n(f_l(s(x1))))²``

* ``s``: the lpips scaling layer, ``(x − shift) / scale`` with per-channel
  ``shift = (−.030, −.088, −.188)``, ``scale = (.458, .448, .450)``; inputs in ``[−1, 1]``.
* ``f_l``: the ReLU outputs of AlexNet (``relu1 … relu5``: channels 64, 192, 384,
  256, 256) or VGG16 (``relu1_2 … relu5_3``: 64, 128, 256, 512, 512), torchvision's
  ``features`` layout, loaded from ``alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth``.
* ``n``: unit length over channels, ``f / (‖f‖₂ + 1e-10)``.
* ``w_l``: the linear heads (1×1 conv, no bias, 1 output) of ``weights/v0.1/alex.pth``
  / ``vgg.pth`` from the lpips package (keys ``lin{l}.model.1.weight``).

``spatial=True`` gives the per-pixel map: each layer's map bilinearly upsampled to the
input size (``align_corners=False``) and summed, as lpips' ``spatial=True``; its mean is close
to (not equal to) the spatial average. The masked diversity metrics use this map.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from inade.metrics.weights import ALEXNET, LPIPS_LIN, VGG16, MetricsError, load_weights
from inade.models.vgg import _features as vgg_features

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)

# torchvision's `features` Sequential: (index, module) for each net; "M" = max pool 3/2 (alex) or 2/2 (vgg).
_ALEX = [(0, (3, 64, 11, 4, 2)), "R", "M", (3, (64, 192, 5, 1, 2)), "R", "M", (6, (192, 384, 3, 1, 1)), "R",
         (8, (384, 256, 3, 1, 1)), "R", (10, (256, 256, 3, 1, 1)), "R"]
_ALEX_TAPS = (1, 4, 7, 9, 11)  # the ReLU outputs lpips reads
_VGG_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_VGG_TAPS = (3, 8, 15, 22, 29)
CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}


def _alex_layers() -> list[nn.Module]:
    layers: list[nn.Module] = []
    for item in _ALEX:
        if item == "R":
            layers.append(nn.ReLU())
        elif item == "M":
            layers.append(nn.MaxPool2d(3, 2))
        else:
            cin, cout, k, s, p = item[1]
            layers.append(nn.Conv2d(cin, cout, k, stride=s, padding=p))
    return layers


class Backbone(nn.Module):
    """AlexNet or VGG16 ``features`` (torchvision indices), returning the five ReLU maps lpips uses."""

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in CHANNELS:
            raise ValueError(f"net must be 'alex' or 'vgg', got {net!r}")
        self.net = net
        self.features = nn.Sequential(*_alex_layers()) if net == "alex" else vgg_features(_VGG_CFG)
        self.taps = _ALEX_TAPS if net == "alex" else _VGG_TAPS

    def forward(self, x: Tensor) -> list[Tensor]:
        """``[B, 3, H, W]`` (already scaled) -> five maps ``[B, C_l, H_l, W_l]``."""
        out = []
        for i, layer in enumerate(self.features[: self.taps[-1] + 1]):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out


class LinearHead(nn.Module):
    """lpips' ``NetLinLayer`` in eval mode: ``model.1`` is the 1×1 conv (``model.0`` was dropout)."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def unit_normalize(f: Tensor, eps: float = 1e-10) -> Tensor:
    """``f / (‖f‖₂ over channels + eps)``, ``[B, C, H, W]``."""
    return f / (f.pow(2).sum(1, keepdim=True).sqrt() + eps)


class LPIPS(nn.Module):
    """LPIPS v0.1 distance between images in ``[-1, 1]``.

    Args:
        net: ``"alex"`` (default, what the paper-era diversity numbers use) or ``"vgg"``.
        backbone_weights: torchvision's ``alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth``
            (default ``$INADE_ALEXNET_WEIGHTS`` / ``$INADE_VGG16_WEIGHTS``).
        lpips_weights: lpips' ``weights/v0.1/alex.pth`` / ``vgg.pth`` (file or the ``v0.1`` folder;
            default ``$INADE_LPIPS_WEIGHTS``).
        pretrained: ``False`` builds random weights (tests, speed runs); nothing is read.

    ``forward(x0, x1)``: ``[B, 3, H, W]`` each -> ``[B]`` distances (float32);
    ``forward(x0, x1, spatial=True)`` -> ``[B, 1, H, W]`` per-pixel map.
    """

    def __init__(self, net: str = "alex", backbone_weights=None, lpips_weights=None, *, pretrained: bool = True):
        super().__init__()
        self.net_name = net
        self.backbone = Backbone(net)
        self.lins = nn.ModuleList(LinearHead(c) for c in CHANNELS[net])
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))
        if pretrained:
            spec = ALEXNET if net == "alex" else VGG16
            load_weights(self.backbone, backbone_weights, spec, ignore=("classifier.",))
            lin = LPIPS_LIN[net]
            load_weights(self.lins, lpips_weights, lin, rename=_lin_key)
        self.requires_grad_(False)
        self.eval()

    def features(self, x: Tensor) -> list[Tensor]:
        """Unit-normalised backbone features of ``x [B, 3, H, W]`` in ``[-1, 1]`` (five maps)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS needs [B, 3, H, W] images, got {tuple(x.shape)}")
        low = MIN_SIZE[self.net_name]
        if min(x.shape[-2:]) < low:
            raise MetricsError(f"LPIPS ({self.net_name}) needs images of at least {low}x{low} pixels (its last "
                               f"feature map would be empty), got {x.shape[-1]}x{x.shape[-2]}")
        return [unit_normalize(f.float()) for f in self.backbone((x.float() - self.shift) / self.scale)]

    def _combine(self, f0: list[Tensor], f1: list[Tensor], size, spatial: bool) -> Tensor:
        maps = [lin((a - b) ** 2) for a, b, lin in zip(f0, f1, self.lins)]
        if spatial:
            return sum(F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps)
        return sum(m.mean((2, 3)) for m in maps)[:, 0]

    def forward(self, x0: Tensor, x1: Tensor, *, spatial: bool = False) -> Tensor:
        if x0.shape != x1.shape:
            raise ValueError(f"LPIPS needs two images of one shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
        B = x0.shape[0]
        f = self.features(torch.cat([x0, x1]))
        return self._combine([t[:B] for t in f], [t[B:] for t in f], x0.shape[-2:], spatial)

    def pair_maps(self, images: Tensor, i: Tensor, j: Tensor, *, spatial: bool = True) -> Tensor:
        """Distances of pairs ``(images[i], images[j])``, each image's features computed once:
        ``[P, 1, H, W]`` maps (``spatial``) or ``[P]``."""
        f = self.features(images)
        return self._combine([t[i] for t in f], [t[j] for t in f], images.shape[-2:], spatial)


# The smallest side the backbone keeps a non-empty last feature map for (AlexNet's three
# stride-2 stages after an 11x11 stride-4 conv; VGG16's four 2x2 pools before relu5_3).
MIN_SIZE = {"alex": 31, "vgg": 16}


def _lin_key(k: str) -> str | None:
    # lpips' file: "lin{l}.model.1.weight" -> our ModuleList "{l}.model.1.weight".
    return k[3:] if k.startswith("lin") else k
