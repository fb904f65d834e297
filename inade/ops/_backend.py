"""Backend choice and dispatch shared by every op: ``auto | reference | triton | cpp | cuda``.

``INADE_BACKEND`` (read at each call) or :func:`use_backend` forces one backend
for all ops; ``auto`` picks the fastest verified backend for the tensor's device:
``cpp`` on CPU, ``triton`` on CUDA. When the extension ``inade._C`` was not
built, ``cpp`` falls back to ``reference`` with one warning. ``cuda`` is a name
DESIGN reserves for CUDA kernels in ``inade._C``; none are built, so asking for
it is one clear error.

:func:`run_pass` is the one place that maps a pass of an op to its implementation
on the chosen backend (see its docstring for the names).
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import os
import threading
import warnings

import torch

from inade.ops import reference

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


def resolve(device: torch.device) -> str:
    """The backend that will run an op on ``device``: ``reference``, ``triton`` or ``cpp`` (never ``auto``).

    Raises ``RuntimeError`` when the requested backend cannot run on ``device``.
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
        raise RuntimeError(
            "backend 'cuda' is not built: inade._C has CPU kernels only; on a GPU use 'triton' (or 'auto')"
        )
    return name


def run_pass(op: str, pass_name: str, device: torch.device, *args):
    """Run one pass of one op on the backend :func:`resolve` picks for ``device``.

    The implementation of pass ``<pass>`` of op ``<op>`` (e.g. ``modulation``, ``stats``) is

    * ``cpp``: ``inade._C.instance_<op>_<pass>``,
    * ``triton``: ``inade.kernels.instance_<op>.<pass>`` (the launcher),
    * ``reference``: ``inade.ops.reference.instance_<op>_<pass>``,

    all taking ``args`` and returning what the custom op ``inade::instance_<op>_<pass>`` returns.
    """
    backend = resolve(device)
    name = f"instance_{op}_{pass_name}"
    if backend == "cpp":
        return getattr(extension(), name)(*args)
    if backend == "triton":
        return getattr(importlib.import_module(f"inade.kernels.instance_{op}"), pass_name)(*args)
    return getattr(reference, name)(*args)


def forbid_double_backward(op: str, custom_ops) -> None:
    """Register on each of ``custom_ops`` (passes of ``op``) an autograd formula that raises:
    double backward is not implemented, and saying so beats a silently wrong gradient."""

    def backward(ctx, *grads):
        raise NotImplementedError(f"double backward of {op} is not implemented")

    for custom_op in custom_ops:
        custom_op.register_autograd(backward)
