"""The one test harness of the op tests: backends to run, the tolerance table, the
low-precision error budget, NaN-poisoned allocations, the shapes and degenerate index
maps shared by the three ops, and the ``torch.compile`` check.

Without a GPU, Triton kernels run in the interpreter: ``TRITON_INTERPRET=1`` must
be set before triton is first imported, which is why it is set here.
"""
from __future__ import annotations

import importlib.util
import os
import tempfile

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch.utils.deterministic  # noqa: E402

from inade.ops import _backend  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


try:  # hypothesis keeps its files (example database, constants) in a temporary folder, not ./.hypothesis
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(tempfile.mkdtemp(prefix="inade-hypothesis-"))
except ImportError:  # the test extra brings it; without it those tests skip
    pass


@pytest.fixture(autouse=True)
def _own_working_folder(tmp_path_factory, monkeypatch):
    """Every test runs in an empty working folder of its own: none reads or writes the repository's
    (``./checkpoints`` of ``make train``, ``./results``), so ``make test`` passes in any state."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))

# dtype -> (atol, rtol) for comparing a fused backend with the float32/64 reference.
TOLERANCES = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (2e-5, 2e-5),
    torch.bfloat16: (5e-2, 5e-2),
    torch.float16: (5e-3, 5e-3),
}
# Gradients that are sums over every pixel (dγ, dβ, dW, db) get this much wider a tolerance.
SUM_SCALE = 10.0
# The backend every torch.compile test compiles with.
COMPILE_BACKEND = "inductor"

# (B, C, H, W, L) shared by the op tests: odd sizes, B=1, one row, one instance,
# more instances than one Triton block of 64, more instances than pixels of some images.
SHAPES = [
    (2, 8, 5, 7, 4),
    (1, 40, 9, 17, 70),
    (3, 33, 1, 130, 2),
    (2, 16, 6, 6, 1),
    (1, 3, 11, 13, 143),
]

# Index maps on which every op must equal a known one (see degenerate_map).
DEGENERATE_MAPS = ("one-instance", "own-instance-per-pixel", "empty-instances")


def shape_id(s) -> str:
    """Readable pytest id of a ``(B, C, H, W, L)`` shape: ``B2-C8-H5-W7-L4``."""
    return "B{}-C{}-H{}-W{}-L{}".format(*s)


def degenerate_map(kind: str, B: int, H: int, W: int, seed: int = 0) -> tuple[torch.Tensor, int]:
    """``(inst [B, H, W] int64 on DEVICE, L)`` for one of :data:`DEGENERATE_MAPS`:

    * ``one-instance``: every pixel id 0, ``L = 1`` (the op is its dense counterpart);
    * ``own-instance-per-pixel``: id = pixel index, ``L = H·W`` (each instance one pixel);
    * ``empty-instances``: random ids in ``[0, 4)`` with ``L = 9``: ids 4 ... 8 have no pixel.
    """
    if kind == "one-instance":
        return torch.zeros(B, H, W, dtype=torch.long, device=DEVICE), 1
    if kind == "own-instance-per-pixel":
        return torch.arange(H * W, device=DEVICE).view(1, H, W).expand(B, H, W).contiguous(), H * W
    if kind == "empty-instances":
        g = torch.Generator().manual_seed(seed)
        inst = torch.randint(0, 4, (B, H, W), generator=g)
        inst.view(B, -1)[:, :4] = torch.arange(4)  # every id below 4 present in every image
        return inst.to(DEVICE), 9
    raise ValueError(f"unknown degenerate map {kind!r}")


def fused_backends() -> list[str]:
    """The non-reference backends that can run here."""
    names = []
    if _backend.extension() is not None and DEVICE.type == "cpu":
        names.append("cpp")
    if importlib.util.find_spec("triton") is not None:
        names.append("triton")
    return names


needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")


@pytest.fixture(params=[*fused_backends(), "fallback"])
def backend(request, monkeypatch):
    """Each fused backend in turn, active for the test's duration; then ``fallback``: the
    custom ops running the reference passes (``reference.instance_<op>_<pass>``), as they do
    without ``inade._C`` or Triton. The value is the backend name to pass to ``use_backend``."""
    name = request.param
    if name == "fallback":
        monkeypatch.setattr(_backend, "resolve", lambda device: "reference")
        name = "auto"  # not "reference", which runs the whole-op oracle instead of the custom ops
    with _backend.use_backend(name):
        yield name


@pytest.fixture
def poisoned_memory():
    """Every new allocation of every backend comes back full of NaN (integers: their largest value).

    ``torch.use_deterministic_algorithms`` with ``fill_uninitialized_memory`` makes
    ``at::empty`` itself fill, so this reaches the C++ extension's allocations, the
    Triton launchers' ``torch.empty`` and the reference's alike; an output element a
    kernel never writes, or scratch it reads before writing, shows up as NaN.
    """
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    was_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        assert torch.empty(3, device=DEVICE).isnan().all()
        yield
    finally:
        torch.use_deterministic_algorithms(was_deterministic, warn_only=was_warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = was_fill


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, scale: float = 1.0, msg=""):
    """``actual`` matches ``expected`` within ``dtype``'s tolerance (``scale`` widens it)."""
    atol, rtol = TOLERANCES[dtype]
    torch.testing.assert_close(actual.double(), expected.double(), atol=atol * scale, rtol=rtol * scale, msg=msg or None)


def assert_within_twice_torch_error(names, ours, torch_low, exact, dtype: torch.dtype) -> None:
    """Low-precision error budget: for each output, the error of ``ours`` against ``exact``
    (float64) is at most twice the error of PyTorch's own run in ``dtype`` (``torch_low``),
    plus ``4·eps·max|exact|`` (a few roundings of the output)."""
    for name, o, t, e in zip(names, ours, torch_low, exact):
        assert o.dtype == dtype, f"{name} has dtype {o.dtype}, expected {dtype}"
        err_ours = (o.double() - e.double()).abs().max().item()
        err_torch = (t.double() - e.double()).abs().max().item()
        slack = 4 * torch.finfo(dtype).eps * e.double().abs().max().item()
        assert err_ours <= 2 * err_torch + slack, f"{name}: ours {err_ours:.3g} vs torch {err_torch:.3g}"


def gradcheck(fn, inputs) -> bool:
    """``torch.autograd.gradcheck`` of ``fn`` at float64 ``inputs`` on the active backend.

    Triton in the interpreter (CI, no GPU) runs every kernel launch in Python, so there
    the check is ``fast_mode`` (the Jacobian against random projections: a few launches
    instead of two per input element, same tolerances); everywhere else the full one.
    """
    fast = _backend.requested_backend() == "triton" and _backend.triton_interpreted()
    return torch.autograd.gradcheck(fn, inputs, fast_mode=fast)


def assert_double_backward_raises(y: torch.Tensor, x: torch.Tensor, dy: torch.Tensor) -> None:
    """The gradient of ``y`` w.r.t. ``x`` (with ``create_graph``) cannot be differentiated again:
    a clear error, not a silently wrong second derivative."""
    (gx,) = torch.autograd.grad(y, x, dy, create_graph=True)
    with pytest.raises((NotImplementedError, RuntimeError), match="double backward|not implemented|does not require grad"):
        gx.sum().backward()


def assert_compiled_matches_eager(fn, inputs, grad_outputs) -> None:
    """``torch.compile(fn, fullgraph=True)`` (with :data:`COMPILE_BACKEND`) gives eager's outputs
    and input gradients. ``fn(*inputs)`` returns a tensor or a tuple matching ``grad_outputs``."""
    compiled = torch.compile(fn, fullgraph=True, backend=COMPILE_BACKEND)
    results = []
    for f in (fn, compiled):
        leaves = [t.detach().clone().requires_grad_() for t in inputs]
        outs = f(*leaves)
        outs = outs if isinstance(outs, tuple) else (outs,)
        torch.autograd.backward(outs, grad_outputs)
        results.append([*outs, *(t.grad for t in leaves)])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)
