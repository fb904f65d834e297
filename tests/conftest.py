"""Shared test set-up: backends to run, tolerances, NaN-poisoned outputs.

Without a GPU, Triton kernels run in the interpreter: ``TRITON_INTERPRET=1`` must
be set before triton is first imported, which is why it is set here.
"""
from __future__ import annotations

import importlib.util
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from inade.ops import _backend  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

# dtype -> (atol, rtol) for comparing a fused backend with the float32/64 reference.
TOLERANCES = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (2e-5, 2e-5),
    torch.bfloat16: (5e-2, 5e-2),
    torch.float16: (5e-3, 5e-3),
}


def fused_backends() -> list[str]:
    """The non-reference backends that can run here."""
    names = []
    if _backend.extension() is not None:
        names.append("cpp" if DEVICE.type == "cpu" else None)
    if importlib.util.find_spec("triton") is not None:
        names.append("triton")
    return [n for n in names if n]


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")


@pytest.fixture(params=fused_backends())
def backend(request):
    """Each fused backend in turn, active for the test's duration."""
    with _backend.use_backend(request.param):
        yield request.param


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, scale: float = 1.0, msg=""):
    """``actual`` matches ``expected`` within ``dtype``'s tolerance (``scale`` widens it)."""
    atol, rtol = TOLERANCES[dtype]
    torch.testing.assert_close(actual.double(), expected.double(), atol=atol * scale, rtol=rtol * scale, msg=msg or None)
