"""Backend choice shared by every op: ``auto | reference | triton | cpp | cuda``.

``INADE_BACKEND`` (read at each call) or :func:`use_backend` forces one backend
for all ops; ``auto`` picks the fastest verified backend for the tensor's device:
``cpp`` on CPU, ``triton`` on CUDA. When the extension ``inade._C`` was not
built, ``cpp`` falls back to ``reference`` with one warning.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import threading
import warnings

import torch

BACKENDS = ("auto", "reference", "triton", "cpp", "cuda")
_local = threading.local()


@functools.lru_cache(maxsize=None)
def extension():
    """The compiled module ``inade._C``, or ``None`` (with one warning) if it is missing."""
    try:
        from inade import _C  # noqa: PLC0415
    except ImportError as err:
        warnings.warn(
            f"inade._C is not built ({err}); the CPU ops use the slower reference path. "
            "Build it with `pip install --no-build-isolation -e .`.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return _C


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """Whether Triton is importable (GPU, or CPU tensors under ``TRITON_INTERPRET=1``)."""
    return importlib.util.find_spec("triton") is not None


def triton_interpreted() -> bool:
    """Whether Triton kernels run in the interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def requested_backend() -> str:
    """The backend asked for: the innermost :func:`use_backend`, else ``INADE_BACKEND``, else ``auto``."""
    name = getattr(_local, "backend", None) or os.environ.get("INADE_BACKEND", "auto")
    name = name.strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"INADE_BACKEND={name!r} is not one of {', '.join(BACKENDS)}")
    return name


@contextlib.contextmanager
def use_backend(name: str):
    """Context manager forcing ``name`` for every op called inside it (this thread only)."""
    if name not in BACKENDS:
        raise ValueError(f"backend {name!r} is not one of {', '.join(BACKENDS)}")
    previous = getattr(_local, "backend", None)
    _local.backend = name
    try:
        yield
    finally:
        _local.backend = previous


def resolve(device: torch.device, has_cuda_kernel: bool = False) -> str:
    """The backend that will run an op on ``device`` (never ``auto``).

    Args:
        device: device of the op's main input.
        has_cuda_kernel: whether this op has a verified CUDA kernel in ``inade._C``.
    """
    name = requested_backend()
    if name == "auto":
        if device.type == "cuda":
            return "triton" if triton_available() else "reference"
        return "cpp" if extension() is not None else "reference"
    if name == "cpp":
        if device.type != "cpu":
            raise RuntimeError(f"backend 'cpp' runs on CPU tensors, got a tensor on {device}")
        return "cpp" if extension() is not None else "reference"
    if name == "triton":
        if not triton_available():
            raise RuntimeError("backend 'triton' needs the triton package: pip install triton")
        if device.type != "cuda" and not triton_interpreted():
            raise RuntimeError(
                f"backend 'triton' runs on CUDA tensors (got {device}); "
                "set TRITON_INTERPRET=1 before importing triton to run it on CPU"
            )
        return "triton"
    if name == "cuda":
        if device.type != "cuda":
            raise RuntimeError(f"backend 'cuda' runs on CUDA tensors, got a tensor on {device}")
        if not has_cuda_kernel or extension() is None or not hasattr(extension(), "has_cuda"):
            raise RuntimeError("backend 'cuda' is not available for this op: use 'triton' or 'auto'")
        return "cuda"
    return name
