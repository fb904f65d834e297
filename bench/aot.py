"""Compile every Triton kernel ahead of time exactly as a real launch specialises it.

A launch of a ``@triton.jit`` kernel is specialised by the JIT from its arguments:
integers equal to 1 become constants, integers and tensor pointers divisible by 16
get a ``tt.divisibility`` attribute, constexprs are baked in. Compiling a kernel with
a hand-written signature (every stride a plain ``i32``) checks a program that never
runs. So the specs here are *derived from real launches*, in two steps:

1. **capture** (a subprocess with ``TRITON_INTERPRET=1``): the public ops
   (``inade.ops.*``, backend ``triton``) run forward and backward on CPU tensors of
   model-like shapes, every dtype, contiguous and channels-last. A hook on the
   interpreter's launch records each kernel's bound arguments (tensors as dtype,
   16-byte alignment and size; ints; constexprs) and launch options, and returns
   without running the kernel (outputs stay uninitialised; nothing reads them).
   While capturing, the launchers take their GPU choices (``tl.dot`` precision,
   upcasts, the grid split for an H100's 132 SMs; see ``_pretend_gpu``);
   autotuned kernels are recorded once per config.
2. **compile** (a subprocess without the interpreter): each distinct launch is
   rebuilt from stand-ins and passed through Triton's own binder
   (``create_function_from_signature`` + ``JITFunction._pack_args``, present in
   triton 3.6 and 3.9), giving the same ``ASTSource(signature, constexprs, attrs)``
   and options the JIT would compile on a GPU; then ``triton.compile`` for sm_80 /
   sm_90, ``ptxas -v`` for registers and spills, the PTX for load/store widths.

Used by ``tests/_aot.py`` (the AOT tests) and ``bench/aot_report.py`` (the
committed resource report).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ARCHS = (80, 90)
OPS = ("instance_modulation", "instance_avg_pool", "instance_conv2d")
H100_SMS = 132  # SXM H100 and H200: the grid split the launchers compute on those GPUs
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------
# Step 1: capture (runs in a subprocess with TRITON_INTERPRET=1)
# ---------------------------------------------------------------------------


def _cases(op: str, quick: bool):
    """``(label, thunk)`` pairs; each thunk runs ``op`` forward and backward once.

    Shapes are model-like (channels multiples of 16, pixel counts multiples of 16,
    instance counts that are not) so the divisibility attributes are those of
    training; ``quick`` keeps float32 and bfloat16 in both layouts.
    """
    import torch  # noqa: PLC0415

    import inade.ops as ops  # noqa: PLC0415

    dtypes = (torch.float32, torch.bfloat16) if quick else (torch.float32, torch.bfloat16, torch.float16)
    layouts = (torch.contiguous_format, torch.channels_last)
    gen = torch.Generator().manual_seed(0)

    def fmap(B, C, H, W, dtype, fmt):
        return torch.randn(B, C, H, W, generator=gen).to(dtype).contiguous(memory_format=fmt).requires_grad_()

    def ids(B, H, W, L):
        return torch.randint(0, L, (B, H, W), generator=gen)

    def short(dtype, fmt):
        return f"{str(dtype).replace('torch.', '')}-{'cl' if fmt == torch.channels_last else 'contig'}"

    cases = []
    for dtype in dtypes:
        for fmt in layouts:
            tag = short(dtype, fmt)
            if op == "instance_modulation":
                B, C, H, W, L = 2, 256, 64, 128, 20
                for training in (True, False):
                    def run(training=training, dtype=dtype, fmt=fmt):
                        x, inst = fmap(B, C, H, W, dtype, fmt), ids(B, H, W, L)
                        gamma = torch.randn(B, L, C, generator=gen).to(dtype).requires_grad_()
                        beta = torch.randn(B, L, C, generator=gen).to(dtype).requires_grad_()
                        y = ops.instance_modulation(x, inst, gamma, beta, running_mean=torch.zeros(C),
                                                    running_var=torch.ones(C), training=training)
                        y.backward(torch.ones_like(y))
                    cases.append((f"B{B}-C{C}-{H}x{W}-L{L}-{tag}-{'train' if training else 'eval'}", run))
            elif op == "instance_avg_pool":
                B, C, H, W = 2, 64, 64, 128
                for L in (20, 100):  # one instance block; several (L wider than the block)
                    def run(L=L, dtype=dtype, fmt=fmt):
                        x = fmap(B, C, H, W, dtype, fmt)
                        out = ops.instance_avg_pool(x, ids(B, H, W, L), L)
                        out.backward(torch.ones_like(out))
                    cases.append((f"B{B}-C{C}-{H}x{W}-L{L}-{tag}", run))
            elif op == "instance_conv2d":
                B, C, H, W, L = 2, 64, 64, 128, 20
                for k, renorm in ((3, True), (3, False), (1, False)):
                    def run(k=k, renorm=renorm, dtype=dtype, fmt=fmt):
                        x = fmap(B, C, H, W, dtype, fmt)
                        w = torch.randn(C, C, k, k, generator=gen).to(dtype).requires_grad_()
                        b = torch.randn(C, generator=gen).to(dtype).requires_grad_()
                        y = ops.instance_conv2d(x, ids(B, H, W, L), w, b, 1, k // 2, renorm)
                        y.backward(torch.ones_like(y))
                    cases.append((f"B{B}-C{C}-{H}x{W}-k{k}{'-renorm' if renorm else ''}-{tag}", run))
            else:
                raise ValueError(f"unknown op {op!r}; known: {', '.join(OPS)}")
    return cases


def _describe(value):
    """A JSON-able description of one launch argument."""
    import torch  # noqa: PLC0415

    if isinstance(value, torch.Tensor):
        return {"tensor": str(value.dtype).replace("torch.", ""), "ptr_mod16": value.data_ptr() % 16,
                "numel": value.numel()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    if hasattr(value, "value"):  # tl.constexpr
        return {"value": value.value}
    if value.__class__.__name__ == "dtype":  # a triton dtype passed as constexpr
        return {"tl_dtype": str(value)}
    raise TypeError(f"cannot describe launch argument {value!r}")


class _Recorder:
    """Patches the interpreter's launch (and the autotuner) to record launches without running them."""

    def __init__(self):
        self.launches = []
        self.case = ""

    def record(self, fn, args, kwargs, extra_options=None):
        import inspect  # noqa: PLC0415

        names = list(inspect.signature(fn).parameters)
        bound = dict(zip(names, args))
        options = {}
        for key, value in kwargs.items():
            (bound if key in names else options)[key] = value
        options.update(extra_options or {})
        for name, param in inspect.signature(fn).parameters.items():
            if name not in bound and param.default is not inspect.Parameter.empty:
                bound[name] = param.default
        self.launches.append({
            "module": fn.__module__, "kernel": fn.__name__, "case": self.case,
            "args": {n: _describe(bound[n]) for n in names},
            "options": {k: _describe(v)["value"] for k, v in options.items()},
        })

    def install(self):
        from triton.runtime import autotuner, interpreter  # noqa: PLC0415

        recorder = self

        def interpreted_run(self, *args, grid, warmup, **kwargs):
            if not warmup:
                recorder.record(self.fn, args, kwargs)

        def autotuned_run(self, *args, **kwargs):
            inner = self.fn
            while not hasattr(inner, "arg_names") or not isinstance(inner, interpreter.InterpretedFunction):
                inner = inner.fn
            for config in self.configs:
                merged = {**kwargs, **config.all_kwargs()}
                recorder.record(inner.fn, args, merged, {"autotune_configs": len(self.configs)})

        interpreter.InterpretedFunction.run = interpreted_run
        autotuner.Autotuner.run = autotuned_run
        _pretend_gpu()


def _pretend_gpu() -> None:
    """Make the launchers take their GPU choices while the tensors stay on the CPU: the
    device-dependent helpers of ``inade.kernels._launch`` (every function with a ``device``
    parameter: dot precision, upcast, SM count, reduction split) are asked about a CUDA
    device, ``Tensor.is_cuda`` is true, and the device reports an H100's 132 SMs."""
    import importlib  # noqa: PLC0415
    import inspect  # noqa: PLC0415

    import torch  # noqa: PLC0415

    props = type("Props", (), {"multi_processor_count": H100_SMS, "name": "H100 (assumed for capture)",
                               "major": 9, "minor": 0, "total_memory": 80 * 2**30})()
    torch.cuda.get_device_properties = lambda *a, **k: props
    torch.Tensor.is_cuda = property(lambda self: True)
    try:
        launch = importlib.import_module("inade.kernels._launch")
    except ImportError:
        return
    cuda = torch.device("cuda", 0)
    for name, fn in list(vars(launch).items()):
        if not inspect.isfunction(fn) or fn.__module__ != launch.__name__:
            continue
        sig = inspect.signature(fn)
        if "device" not in sig.parameters:
            continue

        def on_cuda(*args, _fn=fn, _sig=sig, **kwargs):
            bound = _sig.bind(*args, **kwargs)
            bound.arguments["device"] = cuda
            return _fn(*bound.args, **bound.kwargs)

        setattr(launch, name, on_cuda)


def _capture_main(ops_, quick: bool) -> None:
    """Entry of the capture subprocess: prints the distinct launches as JSON."""
    assert os.environ.get("TRITON_INTERPRET") == "1", "capture needs TRITON_INTERPRET=1"
    import torch  # noqa: PLC0415

    from inade.ops import _backend  # noqa: PLC0415

    recorder = _Recorder()
    recorder.install()
    torch.set_num_threads(1)
    seen, unique = set(), []
    with _backend.use_backend("triton"):
        for op in ops_:
            for label, run in _cases(op, quick):
                recorder.case = f"{op}/{label}"
                start = len(recorder.launches)
                run()
                for launch in recorder.launches[start:]:
                    key = json.dumps([launch["module"], launch["kernel"], _spec_key(launch)], sort_keys=True)
                    if key not in seen:
                        seen.add(key)
                        unique.append(launch)
    json.dump(unique, sys.stdout)


def _spec_key(launch) -> dict:
    """What decides the compiled program: dtypes, alignment, ints' specialisation class, constexprs, options."""
    key = {}
    for name, arg in launch["args"].items():
        if "tensor" in arg:
            key[name] = [arg["tensor"], arg["ptr_mod16"] == 0]
        elif isinstance(arg.get("value"), int) and not isinstance(arg["value"], bool):
            v = arg["value"]
            key[name] = v if v in (0, 1) else ["int", v % 16 == 0, abs(v) >= 2**31]
        else:
            key[name] = arg
    return {"args": key, "options": launch["options"]}


def capture(ops_=OPS, quick: bool = False) -> list[dict]:
    """The distinct kernel launches of ``ops_`` (see the module docstring), as dicts."""
    env = dict(os.environ, TRITON_INTERPRET="1", INADE_BACKEND="triton")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-m", "bench.aot", "capture", *(["--quick"] if quick else []), *ops_]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=_ROOT, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"capturing the launches of {', '.join(ops_)} failed:\n{proc.stderr[-6000:]}")
    return json.loads(proc.stdout)


# ---------------------------------------------------------------------------
# Step 2: compile (runs in a subprocess without the interpreter)
# ---------------------------------------------------------------------------


class _TensorStandIn:
    """What Triton's binder reads of a tensor argument: dtype and address."""

    def __init__(self, dtype, ptr_mod16: int):
        self.dtype = dtype
        self._ptr = 1 << 20 | ptr_mod16

    def data_ptr(self) -> int:
        return self._ptr


def _stand_in(arg):
    import torch  # noqa: PLC0415
    import triton.language as tl  # noqa: PLC0415

    if "tensor" in arg:
        return _TensorStandIn(getattr(torch, arg["tensor"]), arg["ptr_mod16"])
    if "tl_dtype" in arg:
        return tl.dtype(arg["tl_dtype"])
    return arg["value"]


def _jit_function(module: str, name: str):
    import importlib  # noqa: PLC0415

    from triton.runtime.jit import JITFunction  # noqa: PLC0415

    fn = getattr(importlib.import_module(module), name)
    while not isinstance(fn, JITFunction):
        fn = fn.fn  # Autotuner / Heuristics wrappers
    return fn


def specialise(launch, arch: int):
    """``(ASTSource, options dict, GPUTarget)`` the JIT would build for ``launch`` on ``arch``."""
    from triton.backends.compiler import GPUTarget  # noqa: PLC0415
    from triton.compiler import ASTSource, make_backend  # noqa: PLC0415
    from triton.runtime.jit import create_function_from_signature  # noqa: PLC0415

    kernel = _jit_function(launch["module"], launch["kernel"])
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    kwargs = {n: _stand_in(a) for n, a in launch["args"].items()}
    kwargs.update({k: v for k, v in launch["options"].items() if k != "autotune_configs"})
    bound, specialization, options = binder(**kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, specialization, options)
    return ASTSource(kernel, signature, constexprs, attrs), options.__dict__, target


def _ptxas(arch: int) -> str:
    """The ptxas Triton itself runs for ``arch`` (its bundled one unless a knob points elsewhere)."""
    from triton.backends.nvidia.compiler import get_ptxas  # noqa: PLC0415

    return get_ptxas(arch).path


def ptxas_usage(ptx: str, arch: int) -> dict:
    """Registers per thread and spill bytes of ``ptx`` from ``ptxas -v`` (Triton's own ptxas)."""
    import tempfile  # noqa: PLC0415

    gpu = f"sm_{arch}a" if arch == 90 else f"sm_{arch}"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        proc = subprocess.run([_ptxas(arch), "-lineinfo", "-v", f"--gpu-name={gpu}", "-o", os.path.join(tmp, "k.cubin"), path],
                              capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"ptxas failed: {proc.stderr[-2000:]}")
    return _parse_ptxas_log(proc.stderr + proc.stdout)


def _parse_ptxas_log(text: str) -> dict:
    import re  # noqa: PLC0415

    regs = re.search(r"Used (\d+) registers", text)
    stack = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", text)
    return {"registers": int(regs.group(1)) if regs else None,
            "stack_bytes": int(stack.group(1)) if stack else 0,
            "spill_store_bytes": int(stack.group(2)) if stack else 0,
            "spill_load_bytes": int(stack.group(3)) if stack else 0}


def global_accesses(llir: str) -> list[dict]:
    """Every global load/store of a compiled kernel: kind, bytes per instruction, source line.

    Read from the LLVM IR, where Triton emits each global access as one inline-asm
    ``ld.global``/``st.global`` or ``cp.async`` (global to shared, for pipelined
    ``tl.dot`` operands) with its final width and its own debug location,
    so each access maps exactly to the source line that issued it.
    """
    import re  # noqa: PLC0415

    files = {m.group(1): os.path.join(m.group(3), m.group(2)) for m in re.finditer(
        r'^!(\d+) = !DIFile\(filename: "([^"]*)", directory: "([^"]*)"', llir, re.MULTILINE)}
    scopes = {m.group(1): m.group(2) for m in re.finditer(
        r"^!(\d+) = (?:distinct )?!DI(?:Subprogram|LexicalBlock\w*)\(.*?\bfile: !(\d+)", llir, re.MULTILINE)}
    locs = {m.group(1): (int(m.group(2)), m.group(3)) for m in re.finditer(
        r"^!(\d+) = !DILocation\(line: (\d+), column: \d+, scope: !(\d+)", llir, re.MULTILINE)}
    access_re = re.compile(r"@\$\d+ (ld|st)\.global((?:\.[\w:]+)*)\s|\b(ld|st)\.global((?:\.[\w:]+)*)\s")
    sources, out = {}, []
    for line in llir.splitlines():
        if "asm" not in line or ".global" not in line:
            continue
        dbg = re.search(r"!dbg !(\d+)", line)
        loc = locs.get(dbg.group(1)) if dbg else None
        path = files.get(scopes.get(loc[1], ""), "") if loc else ""
        text = ""
        if path:
            src = sources.setdefault(path, _read_lines(path))
            text = src[loc[0] - 1].strip() if 0 < loc[0] <= len(src) else ""
        for m in re.finditer(r"cp\.async\.c[ag]\.shared\.global \[[^\]]*\], \[[^\]]*\], (0x[0-9a-fA-F]+|\d+)", line):
            out.append({"kind": "ld", "bytes": int(m.group(1), 0), "line": loc[0] if loc else None, "source": text,
                        "async": True})
        for m in access_re.finditer(line):
            kind, mods = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
            parts = mods.split(".")
            vec = next((int(t[1:]) for t in parts if re.fullmatch(r"v\d+", t)), 1)
            bits = next((int(t[1:]) for t in parts if re.fullmatch(r"[bfus]\d+", t)), 32)
            out.append({"kind": kind, "bytes": vec * bits // 8, "line": loc[0] if loc else None, "source": text})
    return out


def _read_lines(path: str) -> list[str]:
    try:
        with open(path) as f:
            return f.read().splitlines()
    except OSError:
        return []


def _compile_one(launch, arch: int, with_usage: bool) -> dict:
    import contextlib  # noqa: PLC0415
    import io  # noqa: PLC0415

    import triton  # noqa: PLC0415

    src, options, target = specialise(launch, arch)
    log = io.StringIO()
    with contextlib.redirect_stdout(log):  # Triton's own ptxas -v log (TRITON_DUMP_PTXAS_LOG), on a cache miss
        compiled = triton.compile(src, target=target, options=options)
    if not compiled.asm.get("cubin"):
        raise RuntimeError(f"{launch['kernel']}: no cubin for sm_{arch}")
    result = {"arch": arch, "num_warps": compiled.metadata.num_warps,
              "num_stages": compiled.metadata.num_stages, "shared_bytes": compiled.metadata.shared,
              "signature": {k: v for k, v in src.signature.items()},
              "constants": _named_constants(src),
              "divisible_by_16": sorted(_named_attrs(src))}
    if with_usage:
        usage = _parse_ptxas_log(log.getvalue())
        result.update(usage if usage["registers"] is not None else ptxas_usage(compiled.asm["ptx"], arch))
        result["accesses"] = global_accesses(compiled.asm["llir"])
    return result


def _named_constants(src) -> dict:
    """Non-constexpr parameters the JIT turned into constants (ints equal to 1, ``None``)."""
    declared = {p.name for p in src.fn.params if p.is_constexpr}
    names = src.fn.arg_names
    return {names[k[0]]: v for k, v in src.constants.items() if len(k) == 1 and names[k[0]] not in declared}


def _named_attrs(src) -> list[str]:
    names = src.fn.arg_names
    return [names[k[0]] for k, v in src.attrs.items() if any("tt.divisibility" in str(a) for a in v)]


def _compile_main(path: str, archs, with_usage: bool) -> None:
    """Entry of the compile subprocess: reads launches (JSON file), prints results as JSON."""
    assert os.environ.get("TRITON_INTERPRET", "0") != "1", "compiling needs the real triton.jit"
    with open(path) as f:
        launches = json.load(f)
    results = []
    for launch in launches:
        for arch in archs:
            try:
                res = _compile_one(launch, arch, with_usage)
            except Exception as e:  # noqa: BLE001 - reported with the launch that failed
                res = {"arch": arch, "error": f"{type(e).__name__}: {str(e)[-3000:]}"}
            results.append({**{k: launch[k] for k in ("module", "kernel", "case", "options")},
                            "args": launch["args"], **res})
    json.dump(results, sys.stdout)


def compile_launches(launches: list[dict], archs=ARCHS, with_usage: bool = True) -> list[dict]:
    """Compile each launch for each arch (a subprocess without ``TRITON_INTERPRET``); one dict each,
    with ``error`` where compilation failed."""
    import tempfile  # noqa: PLC0415

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH", "")) if p)
    if with_usage:  # registers and spills from the ptxas run that makes the cubin: compile, never a cache hit
        env.update(TRITON_DUMP_PTXAS_LOG="1", TRITON_ALWAYS_COMPILE="1")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "launches.json")
        with open(path, "w") as f:
            json.dump(launches, f)
        cmd = [sys.executable, "-m", "bench.aot", "compile", path, "--archs", *map(str, archs)]
        if not with_usage:
            cmd.append("--no-usage")
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=_ROOT, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"ahead-of-time compilation failed:\n{proc.stderr[-6000:]}")
    return json.loads(proc.stdout)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.aot", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    cap = sub.add_parser("capture", help="print the distinct launches of the ops as JSON (TRITON_INTERPRET=1)")
    cap.add_argument("ops", nargs="*", default=list(OPS))
    cap.add_argument("--quick", action="store_true")
    com = sub.add_parser("compile", help="compile launches from a JSON file, print results as JSON")
    com.add_argument("path")
    com.add_argument("--archs", nargs="+", type=int, default=list(ARCHS))
    com.add_argument("--no-usage", action="store_true")
    args = parser.parse_args(argv)
    if args.cmd == "capture":
        _capture_main(args.ops, args.quick)
    else:
        _compile_main(args.path, args.archs, not args.no_usage)


if __name__ == "__main__":
    main()
