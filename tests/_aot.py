"""Ahead-of-time compilation of Triton kernels for GPUs that are not there.

The interpreter (``TRITON_INTERPRET=1``, how CI runs kernels) accepts programs the
GPU compiler rejects (block shapes, ``tl.dot`` sizes, dtypes), so every kernel is
also compiled to PTX and cubin for sm_80 and sm_90. That must happen in a process
without ``TRITON_INTERPRET`` (which replaces ``@triton.jit``), hence the subprocess.
Each ``kernels/<op>.py`` lists what to compile in ``aot_specs()``:
``(kernel, [types of the non-constexpr arguments], {constexpr: value})``.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

ARCHS = (80, 90)

_SCRIPT = textwrap.dedent(
    """
    import importlib, sys
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    module = importlib.import_module(sys.argv[1])
    archs = [int(a) for a in sys.argv[2:]]
    count = 0
    for kernel, arg_types, constexprs in module.aot_specs():
        names = [n for n in kernel.arg_names if n not in constexprs]
        if len(names) != len(arg_types):
            raise SystemExit(f"{kernel.fn.__name__}: {len(arg_types)} types for {len(names)} arguments {names}")
        signature = dict(zip(names, arg_types))
        signature.update({n: "constexpr" for n in constexprs})
        for arch in archs:
            src = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
            compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32))
            assert compiled.asm["cubin"], kernel.fn.__name__
            count += 1
    print(f"compiled {count}")
    """
)


def compile_ahead_of_time(module: str, archs=ARCHS) -> int:
    """Compile every kernel of ``module`` (e.g. ``inade.kernels.instance_modulation``)
    for each architecture; returns the number compiled, raises with the compiler's
    message on failure."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, module, *map(str, archs)], env=env, capture_output=True, text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        raise AssertionError(f"ahead-of-time compilation of {module} failed:\n{proc.stderr[-6000:]}")
    return int(proc.stdout.strip().split()[-1])
