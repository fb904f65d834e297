"""Ahead-of-time compilation of Triton kernels for GPUs that are not there (test helper).

The interpreter (``TRITON_INTERPRET=1``, how CI runs kernels) accepts programs the
GPU compiler rejects (block shapes, ``tl.dot`` sizes, dtypes), so every kernel is
also compiled to PTX and cubin for sm_80 and sm_90 — specialised exactly as a real
launch specialises it. The specs are not written by hand: ``bench.aot`` runs the
public op (forward and backward, every dtype, contiguous and channels-last) with a
hook on the interpreter's launch, records each kernel's bound arguments, and
rebuilds them through Triton's own binder (ints equal to 1 become constants,
pointers and ints divisible by 16 get ``tt.divisibility``). A signature change in
``kernels/`` therefore needs no edit here.
"""
from __future__ import annotations

import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from bench import aot  # noqa: E402

ARCHS = aot.ARCHS


def _op_name(module: str) -> str:
    """``inade.kernels.instance_modulation`` (or ``kernels.instance_modulation``) -> ``instance_modulation``."""
    name = module.rsplit(".", 1)[-1]
    if name not in aot.OPS:
        raise ValueError(f"{module}: not one of the ops {aot.OPS}")
    return name


def compile_ahead_of_time(module: str, archs=ARCHS, quick: bool = True) -> int:
    """Compile every kernel launch of the op whose kernels live in ``module`` for each
    architecture; returns the number of compilations, raises with the compiler's
    message on the first failure. ``quick``: float32 and bfloat16 only (float16
    takes the same code paths as bfloat16 in every kernel)."""
    launches = aot.capture([_op_name(module)], quick=quick)
    if not launches:
        raise AssertionError(f"{module}: the op launched no Triton kernel")
    results = aot.compile_launches(launches, archs, with_usage=False)
    failed = [r for r in results if "error" in r]
    if failed:
        r = failed[0]
        raise AssertionError(f"ahead-of-time compilation of {r['module']}.{r['kernel']} ({r['case']}, sm_{r['arch']}) "
                             f"failed ({len(failed)} of {len(results)} failed):\n{r['error']}")
    return len(results)
