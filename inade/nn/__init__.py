"""Modules built on the ops: the INADE norm layer, the instance-aware conv, and
helpers for index maps."""
from inade.nn.conv import InstanceConv2d
from inade.nn.index_maps import instance_classes, resize_index_map
from inade.nn.norm import INADENorm

__all__ = ["INADENorm", "InstanceConv2d", "instance_classes", "resize_index_map"]
