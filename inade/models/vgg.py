"""VGG19 features for the perceptual loss (paper Eq. 8), without a torchvision dependency.

The network is torchvision's ``vgg19().features`` up to ``relu5_1`` (layer
indices kept, so a torchvision checkpoint's ``features.N.weight`` keys load as
they are). Weights are never downloaded: :func:`load_vgg19` reads them from a
path you give, from ``$INADE_VGG19_WEIGHTS``, or from torch hub's cache
(``torch.hub.get_dir()/checkpoints/vgg19-dcbb9e9d.pth``, where
``torchvision.models.vgg19(weights="IMAGENET1K_V1")`` puts them). Without weights
the perceptual loss is switched off with one warning, or raises when required.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from inade.utils.checkpoint_io import load_checkpoint
from inade.utils.errors import UserError

VGG19_FILE = "vgg19-dcbb9e9d.pth"
WEIGHTS_ENV = "INADE_VGG19_WEIGHTS"

# torchvision's VGG19 ("E") up to relu5_1: conv widths, "M" = 2x2 max pool.
_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512)
# End (exclusive) of each slice in ``features``: relu1_1, relu2_1, relu3_1, relu4_1, relu5_1.
SLICE_ENDS = (2, 7, 12, 21, 30)

# ImageNet statistics (for ``normalize_input=True``).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGWeightsNotFound(FileNotFoundError):
    """No VGG19 weights where :func:`load_vgg19` looked."""


def _features(layout=_LAYOUT) -> nn.Sequential:
    """torchvision's VGG ``features`` for a conv-width / ``"M"`` layout (VGG19's by default;
    LPIPS builds VGG16's with it)."""
    layers, in_c = [], 3
    for v in layout:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(in_c, v, 3, padding=1), nn.ReLU()]
            in_c = v
    return nn.Sequential(*layers)  # indices 0 … 29, as torchvision's


class VGG19(nn.Module):
    """Frozen VGG19 feature extractor.

    ``forward(x)``: ``x [B, 3, H, W]`` in ``[-1, 1]`` -> the five maps
    ``relu1_1 … relu5_1`` (``[B, 64, H, W]`` … ``[B, 512, H/16, W/16]``).

    Args:
        normalize_input: map ``[-1, 1]`` to ImageNet-normalised RGB first. The
            public code (SPADE's ``VGG19``) does not; the default follows it.
    """

    def __init__(self, normalize_input: bool = False):
        super().__init__()
        self.features = _features()
        self.normalize_input = normalize_input
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # a frozen feature extractor stays in eval mode
        return super().train(False)

    def load_torchvision_state_dict(self, state: dict) -> None:
        """Load a torchvision ``vgg19`` state dict (``features.N.weight/bias``; the classifier and the
        layers past relu5_1 are ignored). Raises ``ValueError`` naming a missing or misshapen key."""
        own = self.features.state_dict()
        picked = {}
        for key, value in own.items():
            full = f"features.{key}"
            if full not in state:
                raise ValueError(f"VGG19 weights lack {full!r}: expected a torchvision vgg19 state dict")
            if tuple(state[full].shape) != tuple(value.shape):
                raise ValueError(
                    f"VGG19 weight {full!r} has shape {tuple(state[full].shape)}, expected {tuple(value.shape)}"
                )
            picked[key] = state[full]
        self.features.load_state_dict(picked)

    def forward(self, x: Tensor) -> list[Tensor]:
        if self.normalize_input:
            x = ((x + 1) / 2 - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        out, start = [], 0
        for end in SLICE_ENDS:
            for layer in self.features[start:end]:
                x = layer(x)
            out.append(x)
            start = end
        return out


def default_weight_paths() -> list[Path]:
    """Where :func:`load_vgg19` looks when given no path: ``$INADE_VGG19_WEIGHTS``, then torch hub's cache."""
    paths = []
    if os.environ.get(WEIGHTS_ENV):
        paths.append(Path(os.environ[WEIGHTS_ENV]))
    paths.append(Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE)
    return paths


def find_vgg19_weights(path: str | os.PathLike | None = None) -> Path:
    """The weights file to use; raises :class:`VGGWeightsNotFound` listing the places looked at."""
    candidates = [Path(path)] if path is not None else default_weight_paths()
    for p in candidates:
        if p.is_file():
            return p
    looked = ", ".join(str(p) for p in candidates)
    raise VGGWeightsNotFound(
        f"no VGG19 weights found (looked at: {looked}); download torchvision's {VGG19_FILE} "
        f"(https://download.pytorch.org/models/{VGG19_FILE}) into {Path(torch.hub.get_dir()) / 'checkpoints'} "
        f"or set {WEIGHTS_ENV}"
    )


_warned = False


def load_vgg19(path: str | os.PathLike | None = None, *, require: bool = False,
               normalize_input: bool = False) -> VGG19 | None:
    """A frozen :class:`VGG19` with pretrained weights, or ``None`` when there are none.

    Args:
        path: a torchvision-format ``vgg19`` checkpoint; default: :func:`default_weight_paths`.
        require: raise :class:`VGGWeightsNotFound` instead of returning ``None``.
        normalize_input: see :class:`VGG19`.

    Without weights and ``require=False`` it warns once per process that the
    perceptual loss is off. A file that exists but does not hold VGG19 weights
    always raises (``ValueError``, naming the file).
    """
    global _warned
    try:
        file = find_vgg19_weights(path)
    except VGGWeightsNotFound as err:
        if require:
            raise
        if not _warned:
            warnings.warn(f"VGG perceptual loss is off: {err}", RuntimeWarning, stacklevel=2)
            _warned = True
        return None
    try:  # the one checked reader: CRC-32 of every record, weights_only, finite tensors
        state = load_checkpoint(file)
    except UserError as err:
        raise ValueError(f"cannot read VGG19 weights: {err}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{file}: expected a state dict of VGG19 weights, got {type(state).__name__}")
    vgg = VGG19(normalize_input=normalize_input)
    try:
        vgg.load_torchvision_state_dict(state)
    except ValueError as err:
        raise ValueError(f"{file}: {err}") from err
    return vgg
