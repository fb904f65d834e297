"""Finding and loading the weight files the metrics need.

Every metric network here (Inception-v3 for FID, AlexNet / VGG16 and the LPIPS
linear heads) is defined in the project and loads the standard file users
already have. A file is found from an explicit path, else from an environment
variable; a missing file, a file that is not a state dict, a missing or
unexpected key and a wrong shape each raise :class:`WeightsError` with a message
that names the file and says where the file comes from.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from inade.utils.errors import UserError

if TYPE_CHECKING:  # torch loads with the first weight file (python -m inade.metrics parses without it)
    import torch
    from torch import nn


class MetricsError(ValueError):
    """A user-fixable problem with a metric's inputs (the message names the file)."""


class WeightsError(MetricsError):
    """A weight file is missing, unreadable or does not fit the network (the message names it)."""


@dataclass(frozen=True)
class WeightFile:
    """What a network expects: the standard file name, the env var, and where users get it."""

    what: str
    filename: str
    env: str
    source: str

    def resolve(self, path: str | os.PathLike | None) -> Path:
        """The file to load: ``path``, else ``$env``; :class:`WeightsError` when neither is an existing file."""
        given = path if path is not None else os.environ.get(self.env) or None
        if given is None:
            raise WeightsError(
                f"{self.what} needs the weight file {self.filename}: pass its path "
                f"(or set ${self.env}); get it from {self.source}"
            )
        p = Path(given).expanduser()
        if p.is_dir():
            p = p / self.filename
        if not p.is_file():
            raise WeightsError(f"{self.what} weight file not found: {p} (expected {self.filename}; get it from {self.source})")
        return p


INCEPTION = WeightFile(
    "the FID Inception-v3",
    "pt_inception-2015-12-05-6726825d.pth",
    "INADE_INCEPTION_WEIGHTS",
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth "
    "(pytorch-fid's release; also in ~/.cache/torch/hub/checkpoints/ after pytorch-fid has run once)",
)
ALEXNET = WeightFile(
    "the LPIPS AlexNet backbone",
    "alexnet-owt-7be5be79.pth",
    "INADE_ALEXNET_WEIGHTS",
    "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth (torchvision's; ~/.cache/torch/hub/checkpoints/)",
)
VGG16 = WeightFile(
    "the LPIPS VGG16 backbone",
    "vgg16-397923af.pth",
    "INADE_VGG16_WEIGHTS",
    "https://download.pytorch.org/models/vgg16-397923af.pth (torchvision's; ~/.cache/torch/hub/checkpoints/)",
)
LPIPS_LIN = {
    "alex": WeightFile(
        "the LPIPS v0.1 linear layers (alex)", "alex.pth", "INADE_LPIPS_WEIGHTS",
        "the lpips package: pip download lpips, file lpips/weights/v0.1/alex.pth "
        "(or github.com/richzhang/PerceptualSimilarity, lpips/weights/v0.1/)",
    ),
    "vgg": WeightFile(
        "the LPIPS v0.1 linear layers (vgg)", "vgg.pth", "INADE_LPIPS_WEIGHTS",
        "the lpips package: pip download lpips, file lpips/weights/v0.1/vgg.pth "
        "(or github.com/richzhang/PerceptualSimilarity, lpips/weights/v0.1/)",
    ),
}


def read_state_dict(path: Path, spec: WeightFile) -> dict[str, torch.Tensor]:
    """The tensors of a ``torch.save``\\ d state dict (``weights_only``), or :class:`WeightsError`."""
    import torch  # noqa: PLC0415

    from inade.utils.checkpoint_io import load_checkpoint  # noqa: PLC0415

    try:  # the one checked reader: CRC-32 of every record, weights_only, finite tensors
        obj = load_checkpoint(path)
    except UserError as e:
        raise WeightsError(f"{e} (expected {spec.filename})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors; expected {spec.filename}")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_into(module: nn.Module, state: dict[str, torch.Tensor], path: Path, spec: WeightFile,
              *, rename=None, ignore: tuple[str, ...] = ()) -> None:
    """Copy ``state`` into ``module`` strictly: every parameter and buffer present with its exact shape.

    Args:
        rename: maps a file key to the module key (or ``None`` to skip the key).
        ignore: file-key prefixes the network does not use (checked for nothing but presence).
    BatchNorm's ``num_batches_tracked`` counters are optional in the file (older files lack them).
    """
    want = {k: v for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}
    got: dict[str, torch.Tensor] = {}
    unexpected = []
    for k, v in state.items():
        if k.endswith("num_batches_tracked") or k.startswith(ignore):
            continue
        name = rename(k) if rename is not None else k
        if name is None:
            continue
        (got.__setitem__(name, v) if name in want else unexpected.append(k))
    missing = [k for k in want if k not in got]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) ({', '.join(unexpected[:3])}{', ...' if len(unexpected) > 3 else ''})")
        raise WeightsError(f"{path} does not fit {spec.what}: {'; '.join(parts)}; expected {spec.filename}")
    for k, v in got.items():
        if tuple(v.shape) != tuple(want[k].shape):
            raise WeightsError(f"{path}: {k} has shape {tuple(v.shape)}, {spec.what} needs {tuple(want[k].shape)}; "
                               f"expected {spec.filename}")
    module.load_state_dict(got, strict=False)


def load_weights(module: nn.Module, path, spec: WeightFile, **kw) -> Path:
    """Resolve ``path`` with ``spec`` and load it strictly into ``module``; returns the file used."""
    p = spec.resolve(path)
    load_into(module, read_state_dict(p, spec), p, spec, **kw)
    return p
