"""INADE: diverse semantic image synthesis via probability distribution modeling
(Tan et al., CVPR 2021), with fused instance-aware kernels."""
from inade import ops

__version__ = "0.1.0"
__all__ = ["ops"]
