"""INADE: diverse semantic image synthesis via probability distribution modeling
(Tan et al., CVPR 2021), with fused instance-aware kernels.

    cfg = inade.config("cityscapes")
    G, E = inade.Generator(cfg), inade.NoiseEncoder(cfg)
    img = G(label, inst, remap=E(image, inst))
"""
from inade import ops
from inade.config import Config, config
from inade.models.encoder import NoiseEncoder, kl_divergence
from inade.models.generator import Generator
from inade.official import load_official

__version__ = "0.1.0"
__all__ = ["Config", "Generator", "NoiseEncoder", "config", "kl_divergence", "load_official", "ops"]

from inade.models.discriminator import Discriminator  # noqa: E402
from inade.synthesis import Sample, Synthesizer  # noqa: E402

__all__ += ["Discriminator", "Sample", "Synthesizer"]
