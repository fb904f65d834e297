"""Modules built on the ops: the INADE norm layer, the instance-aware conv, the
spectral-norm conv with an eval-mode cache, and helpers for index maps."""
from inade.nn.conv import InstanceConv2d
from inade.nn.index_maps import IndexPyramid, check_integer_map, instance_classes, instance_parts, resize_index_map
from inade.nn.init import NEG_SLOPE, init_weights, leaky_relu, upsample_nearest2x
from inade.nn.norm import INADENorm
from inade.nn.spectral import SpectralNormConv2d

__all__ = [
    "INADENorm",
    "IndexPyramid",
    "InstanceConv2d",
    "NEG_SLOPE",
    "SpectralNormConv2d",
    "check_integer_map",
    "init_weights",
    "instance_classes",
    "instance_parts",
    "leaky_relu",
    "resize_index_map",
    "upsample_nearest2x",
]
