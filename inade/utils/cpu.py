"""What this CPU does well: bfloat16 arithmetic, and the OpenMP defaults of the entry points.

Nothing here imports torch at module level, so :func:`thread_defaults` can run before
torch (and the OpenMP runtime it loads, which reads ``OMP_*`` once, at load) is imported.

* :func:`cpu_has_bf16` — whether the CPU has bfloat16 arithmetic (AVX512-BF16 or AMX on
  x86, the ``bf16`` extension on Arm). Without it oneDNN has no bfloat16 kernels and
  torch's fallback runs a 3×3 convolution 10–250× slower than in float32 (69 s against
  0.28 s for 4×256×64×64 on a 2-core AVX2 EPYC), so ``--amp bf16`` stops there with one
  line and ``--amp auto`` / ``--use_amp`` stay in float32. ``INADE_NO_BF16=1`` forces
  "no bf16" (tests, and a user who wants the check's answer on any machine).
* :func:`thread_defaults` — ``OMP_WAIT_POLICY=PASSIVE`` unless the user set it: with
  gomp's default spinning, a training step beside busy neighbours on a shared CPU ran
  several times slower than its fair share (docs/PERFORMANCE.md, "Good neighbours").
"""
from __future__ import annotations

import os
import platform

NO_BF16_ENV = "INADE_NO_BF16"
BF16_SLOWDOWN = "10–250× slower than float32 (a 3×3 convolution: 69 s against 0.28 s on a 2-core AVX2 EPYC)"
_X86_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpuinfo_flags(path: str = "/proc/cpuinfo") -> set[str] | None:
    """The first processor's feature flags from ``/proc/cpuinfo`` (``flags`` on x86,
    ``Features`` on Arm), or ``None`` where the file does not exist or has none."""
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        return None
    return None


def cpu_has_bf16(*, cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has bfloat16 arithmetic: AVX512-BF16 or AMX-BF16 (x86, as torch reports
    them and as ``/proc/cpuinfo`` lists them), or Arm's ``bf16``. ``False`` when the
    environment variable ``INADE_NO_BF16`` is set to anything but ``0`` or empty."""
    if os.environ.get(NO_BF16_ENV, "") not in ("", "0"):
        return False
    flags = _cpuinfo_flags(cpuinfo)
    if flags is not None:
        return any(f in flags for f in _X86_FLAGS) or "bf16" in flags
    try:
        import torch  # noqa: PLC0415

        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (ImportError, AttributeError):
        return False


def cpu_capability() -> str:
    """torch's name of the CPU's vector unit (``AVX2``, ``AVX512``, …), or the machine name."""
    try:
        import torch  # noqa: PLC0415

        return torch.backends.cpu.get_cpu_capability()
    except (ImportError, AttributeError):
        return platform.machine()


def no_bf16_reason() -> str:
    """One sentence for a table or an error: why bfloat16 is not used on this CPU."""
    forced = os.environ.get(NO_BF16_ENV, "") not in ("", "0")
    why = f"{NO_BF16_ENV} is set" if forced else f"this CPU ({cpu_capability()}) has no bfloat16 arithmetic " \
                                                 "(no AVX512-BF16 or AMX)"
    return f"{why}: bfloat16 would run {BF16_SLOWDOWN}"


def thread_defaults(environ=None) -> dict[str, str]:
    """Set the OpenMP defaults of the entry points in ``environ`` (``os.environ``) where the
    user has not: ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep instead of spinning while they
    wait, so a busy neighbour does not make them burn its core). Call it before torch is
    imported: the OpenMP runtime reads its variables once, when torch loads it. Returns what
    it set (an explicit ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` always wins)."""
    environ = os.environ if environ is None else environ
    if "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ:
        return {}
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return {"OMP_WAIT_POLICY": "PASSIVE"}
