"""The INADE networks: generator, noise-remapping encoder (and, beside them, the
discriminator and losses)."""
from inade.models.encoder import NoiseEncoder, kl_divergence
from inade.models.generator import Generator, INADEResnetBlock, remap_noise
from inade.nn import init_weights

__all__ = ["Generator", "INADEResnetBlock", "NoiseEncoder", "init_weights", "kl_divergence", "remap_noise"]
