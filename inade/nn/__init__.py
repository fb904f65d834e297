"""Modules built on the ops: the INADE norm layer, the instance-aware conv, and
helpers for index maps."""
