"""INADE: diverse semantic image synthesis via probability distribution modeling
(Tan et al., CVPR 2021), with fused instance-aware kernels.

    cfg = inade.config("cityscapes")
    G, E = inade.Generator(cfg), inade.NoiseEncoder(cfg)
    img = G(label, inst, remap=E(image, inst))

The names below are imported when first used (PEP 562): ``import inade`` loads no torch, so
every command line (``train.py``, ``python -m inade.test`` …) parses its options, answers
``--help`` and reports a mistyped option before torch and the models are loaded.
"""
import importlib

# Eager (torch-free), so that ``inade.config`` stays the function, not the module of that name.
from inade.config import Config, config

__version__ = "0.1.0"

_HOME = {"NoiseEncoder": "inade.models.encoder",
         "kl_divergence": "inade.models.encoder", "Generator": "inade.models.generator",
         "load_official": "inade.official", "Discriminator": "inade.models.discriminator",
         "Sample": "inade.synthesis", "Synthesizer": "inade.synthesis"}
_SUBMODULES = ("ops",)

__all__ = ["Config", "Discriminator", "Generator", "NoiseEncoder", "Sample", "Synthesizer", "config",
           "kl_divergence", "load_official", "ops"]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)


def __dir__():
    return sorted(set(globals()) | set(__all__))
