"""The three instance-aware ops of INADE, each with a reference path, an autograd
wrapper, Triton kernels (GPU) and C++ kernels (CPU).

``INADE_BACKEND=auto|reference|triton|cpp|cuda`` (or :func:`use_backend`) picks
the backend for all of them.
"""
from inade.ops._backend import BACKENDS, requested_backend, resolve, use_backend
from inade.ops.instance_avg_pool import instance_avg_pool
from inade.ops.instance_conv2d import instance_conv2d
from inade.ops.instance_modulation import instance_modulation

__all__ = [
    "BACKENDS",
    "instance_avg_pool",
    "instance_conv2d",
    "instance_modulation",
    "requested_backend",
    "resolve",
    "use_backend",
]
