"""bf16 only where the CPU has it (``inade.utils.cpu``), and the OpenMP defaults of the entry points."""
from __future__ import annotations

import pytest
import torch

from inade.training.trainer import resolve_amp
from inade.utils import cpu
from inade.utils.errors import UserError

CPU = torch.device("cpu")


def _cpuinfo(tmp_path, flags: str, key: str = "flags"):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nvendor_id\t: X\n{key}\t\t: fpu sse2 {flags}\n\nprocessor\t: 1\n")
    return str(path)


@pytest.mark.parametrize(("flags", "key", "has"), [
    ("avx2 fma", "flags", False),                    # this project's 2-core EPYC
    ("avx512f avx512bw", "flags", False),            # AVX-512 without its bf16 extension
    ("avx512f avx512_bf16", "flags", True),
    ("amx_tile amx_bf16", "flags", True),
    ("asimd sve bf16", "Features", True),            # Arm
])
def test_cpu_has_bf16_reads_the_flags(tmp_path, monkeypatch, flags, key, has):
    monkeypatch.delenv(cpu.NO_BF16_ENV, raising=False)
    assert cpu.cpu_has_bf16(cpuinfo=_cpuinfo(tmp_path, flags, key)) is has


def test_no_bf16_env_overrides_the_flags(tmp_path, monkeypatch):
    path = _cpuinfo(tmp_path, "avx512_bf16")
    monkeypatch.setenv(cpu.NO_BF16_ENV, "1")
    assert not cpu.cpu_has_bf16(cpuinfo=path)
    assert cpu.NO_BF16_ENV in cpu.no_bf16_reason()
    monkeypatch.setenv(cpu.NO_BF16_ENV, "0")
    assert cpu.cpu_has_bf16(cpuinfo=path)


def test_amp_bf16_without_cpu_bf16_is_one_line_saying_how_much_slower(monkeypatch):
    monkeypatch.setenv(cpu.NO_BF16_ENV, "1")
    with pytest.raises(UserError) as err:
        resolve_amp("bf16", CPU)
    text = str(err.value)
    assert text.startswith("--amp bf16: ") and "slower than float32" in text and "\n" not in text
    assert "--amp none" in text


def test_amp_auto_without_cpu_bf16_stays_float32_with_a_note(monkeypatch):
    monkeypatch.setenv(cpu.NO_BF16_ENV, "1")
    notes = []
    assert resolve_amp("auto", CPU, notes.append) is None
    assert len(notes) == 1 and notes[0].startswith("note: mixed precision off, running in float32")
    assert resolve_amp("none", CPU) is None and resolve_amp("fp16", CPU) is torch.float16


def test_amp_with_cpu_bf16_is_bfloat16(monkeypatch):
    monkeypatch.setattr(cpu, "cpu_has_bf16", lambda: True)
    notes = []
    assert resolve_amp("auto", CPU, notes.append) is torch.bfloat16 and not notes
    assert resolve_amp("bf16", CPU) is torch.bfloat16


def test_thread_defaults_never_override_the_user():
    env = {}
    assert cpu.thread_defaults(env) == {"OMP_WAIT_POLICY": "PASSIVE"} and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    for given in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "10000"}):
        env = dict(given)
        assert cpu.thread_defaults(env) == {} and env == given


@pytest.mark.parametrize("entry", ["train", "inade.test", "inade.cli", "inade.studio.__main__"])
@pytest.mark.parametrize("given", [None, "ACTIVE"])
def test_entry_points_set_passive_waiting_before_torch_unless_the_user_did(tmp_path, entry, given):
    """Each entry point's main sets OMP_WAIT_POLICY=PASSIVE before torch (and OpenMP) is imported;
    a value the user gave is kept."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    code = ("import os, sys, importlib\n"
            f"m = importlib.import_module({entry!r})\n"
            "try:\n    m.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('RESULT', os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["PYTHONPATH"] = str(root)
    if given:
        env["OMP_WAIT_POLICY"] = given
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT"))
    assert line == f"RESULT {given or 'PASSIVE'} False", out.stderr[-2000:]
