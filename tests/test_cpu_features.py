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
