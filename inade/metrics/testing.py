"""Weight files with random values in exactly the real files' key layout (names and shapes).

For tests and speed runs on machines without the real files. The values are
random (scaled so activations neither vanish nor explode); nothing here is a
trained network. AlexNet's and VGG16's classifier tensors, which the metrics do
not read, are saved as expanded zero-stride views: the real shapes in a tiny file.
"""
from __future__ import annotations

from pathlib import Path

import torch

from inade.metrics.inception import FIDInceptionV3
from inade.metrics.lpips import CHANNELS, Backbone
from inade.utils.files import atomic_path

# torchvision's classifier shapes (Dropout, Linear, ReLU, Dropout, Linear, ReLU, Linear).
_CLASSIFIER = {
    "alex": {"classifier.1": (4096, 9216), "classifier.4": (4096, 4096), "classifier.6": (1000, 4096)},
    "vgg": {"classifier.0": (4096, 25088), "classifier.3": (4096, 4096), "classifier.6": (1000, 4096)},
}


def _randomize(module: torch.nn.Module, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Kaiming-scaled convs / linears, BN statistics near (0, 1); returns the state dict."""
    state = {}
    for name, t in module.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        if t.dim() >= 2:
            fan_in = t[0].numel()
            v = torch.randn(t.shape, generator=g) * (2.0 / fan_in) ** 0.5
        elif name.endswith("running_var"):
            v = 0.5 + torch.rand(t.shape, generator=g)
        elif name.endswith(("running_mean", "bias")):
            v = 0.05 * torch.randn(t.shape, generator=g)
        else:  # BN weight
            v = 1.0 + 0.1 * torch.randn(t.shape, generator=g)
        state[name] = v.contiguous()
    return state


def inception_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """``pt_inception-2015-12-05-6726825d.pth``'s keys and shapes (torchvision Inception3, 1008 classes, no aux)."""
    return _randomize(FIDInceptionV3(), torch.Generator().manual_seed(seed))


def backbone_state(net: str = "alex", seed: int = 0) -> dict[str, torch.Tensor]:
    """torchvision ``alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth`` keys and shapes."""
    state = {f"features.{k.split('.', 1)[1]}" if not k.startswith("features.") else k: v
             for k, v in _randomize(Backbone(net), torch.Generator().manual_seed(seed)).items()}
    for name, (o, i) in _CLASSIFIER[net].items():
        state[f"{name}.weight"] = torch.zeros(1).expand(o, i)
        state[f"{name}.bias"] = torch.zeros(1).expand(o)
    return state


def lpips_lin_state(net: str = "alex", seed: int = 0) -> dict[str, torch.Tensor]:
    """lpips ``weights/v0.1/{alex,vgg}.pth``: ``lin{l}.model.1.weight`` ``[1, C_l, 1, 1]``, non-negative."""
    g = torch.Generator().manual_seed(seed)
    return {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) / c for i, c in enumerate(CHANNELS[net])}


def save(state: dict[str, torch.Tensor], path: str | Path) -> Path:
    """``torch.save`` atomically."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)
