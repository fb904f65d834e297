"""Backend choice and the fallback when the extension is missing."""
from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
import types

import pytest
import torch

from inade.ops import _backend, reference, use_backend

WITHOUT_EXTENSION = textwrap.dedent(
    """
    import sys, warnings
    class Block:  # make `import inade._C` fail as on a machine where it was not built
        def find_spec(self, name, path=None, target=None):
            if name == "inade._C":
                raise ImportError("blocked for the test")
    sys.meta_path.insert(0, Block())
    import torch
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import inade
        from inade.ops import instance_modulation, resolve
        x = torch.randn(2, 3, 4, 5); inst = torch.randint(0, 2, (2, 4, 5)); g = torch.randn(2, 2, 3)
        y1 = instance_modulation(x, inst, g, g)
        y2 = instance_modulation(x, inst, g, g)
    ours = [w for w in caught if "inade._C is not built" in str(w.message)]
    print(resolve(x.device), len(ours), tuple(y1.shape), bool((y1 == y2).all()))
    """
)


def test_package_works_without_extension_with_one_warning():
    out = subprocess.run([sys.executable, "-c", WITHOUT_EXTENSION], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "reference 1 (2, 3, 4, 5) True", out.stdout


def test_env_variable_selects_backend(monkeypatch):
    monkeypatch.setenv("INADE_BACKEND", "reference")
    assert _backend.resolve(torch.device("cpu")) == "reference"
    monkeypatch.setenv("INADE_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="INADE_BACKEND='nonsense' is not one of"):
        _backend.resolve(torch.device("cpu"))


def test_context_manager_overrides_env(monkeypatch):
    monkeypatch.setenv("INADE_BACKEND", "reference")
    with use_backend("cpp"):
        assert _backend.requested_backend() == "cpp"
    assert _backend.requested_backend() == "reference"


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_cuda_backend_is_one_clear_error(device):
    """DESIGN reserves the name; no CUDA kernels are built into inade._C, so asking says so."""
    with use_backend("cuda"), pytest.raises(RuntimeError, match="backend 'cuda' is not built.*use 'triton'"):
        _backend.resolve(torch.device(device))


@pytest.mark.parametrize("op, pass_name, args", [
    ("modulation", "stats", (torch.randn(2, 3, 4, 5),)),
    ("avg_pool", "forward", (torch.randn(2, 3, 4, 5), torch.randint(0, 2, (2, 4, 5)), 2)),
    ("conv2d", "backward_weight", (torch.randn(2, 4, 4, 5), torch.randn(2, 3, 4, 5), torch.zeros(2, 4, 5), 3, 1, 1,
                                   False)),
])
def test_run_pass_reaches_each_backend_by_its_name(monkeypatch, op, pass_name, args):
    """run_pass maps (op, pass) to reference.instance_<op>_<pass>, inade._C.instance_<op>_<pass>
    and inade.kernels.instance_<op>.<pass>; a missing extension falls back to the reference."""
    name = f"instance_{op}_{pass_name}"
    calls = []
    monkeypatch.setattr(reference, name, lambda *a: calls.append(("reference", a)) or "ref")
    monkeypatch.setattr(_backend, "extension", lambda: types.SimpleNamespace(**{name: lambda *a: "cpp"}))
    with use_backend("reference"):
        assert _backend.run_pass(op, pass_name, torch.device("cpu"), *args) == "ref"
    assert calls and calls[0][1] == args
    with use_backend("cpp"):
        assert _backend.run_pass(op, pass_name, torch.device("cpu"), *args) == "cpp"
    monkeypatch.setattr(_backend, "extension", lambda: None)
    with use_backend("cpp"):
        assert _backend.run_pass(op, pass_name, torch.device("cpu"), *args) == "ref"
    kernels = importlib.import_module(f"inade.kernels.instance_{op}")
    monkeypatch.setattr(kernels, pass_name, lambda *a: "triton")
    with use_backend("triton"):
        assert _backend.run_pass(op, pass_name, torch.device("cpu"), *args) == "triton"
