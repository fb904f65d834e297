"""The whole GPU verification in one call: ``python -m bench.gpu_check --out DIR``.

Needs only what a CUDA machine with torch and triton already has (torch, triton,
numpy, pytest; no registry access). Stages run in this order, each in its own
subprocess under a time budget, so a run cut off anywhere still returns every
stage before it; after each stage ``DIR/summary.json`` and ``DIR/summary.md`` are
rewritten (each stage also writes ``DIR/stage_<x>.json`` record by record):

    a  build and correctness: versions and tools; the extension (built with
       ``pip install --no-build-isolation --no-deps -e .`` if missing, full mode
       only); every op on the Triton backend against the float64 reference
       (float32 / bfloat16 / float16, contiguous and channels-last, odd and
       model-like shapes, forward and every gradient: relative error, NaN check);
       then the op test files natively (``tests/test_instance_*.py``,
       ``tests/test_backend.py``; pytest-xdist if present)
    b  compute-sanitizer memcheck, then racecheck (shared memory and atomics), on
       one small case per kernel, if the tool exists
    c  op benchmarks at the issue shapes (``bench/bench_instance_*.py``: forward and
       forward+backward time with ``triton.testing.do_bench``, GB/s against the
       bytes floor and the device's peak, against the official-style path and
       ``torch.compile(reference)``)
    d  model: generator inference latency at B=1 for Cityscapes 256×512 and
       CelebAMask-HQ 256×256 (float32, bfloat16 autocast, CUDA-graph replay,
       ``torch.compile``), training-step images/s at batch 8 and peak memory, each
       against the official-style path
    e  the summary (JSON + Markdown), after every stage

Time budget on an H100/H200 (each stage is stopped at its budget; the numbers are
limits, not estimates): a 200 s, b 60 s, c 110 s, d 90 s: under 8 minutes with
start-up. ``--quick``: a (no extension build, float32 and bfloat16 only, 110 s)
and the headline shape of each op in c (50 s): under 3 minutes. ``--dry-run``: the same script on CPU
(Triton interpreter, tiny shapes, no sanitizer, no ``torch.compile``), so CI tests
the script itself; its figures mean nothing.

On the lent device machine (its output folder is ``$OUT``, files at most two
folders down):

    PYTHONUNBUFFERED=1 python -m bench.gpu_check --out $OUT
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = {"a": "build and correctness", "b": "compute-sanitizer", "c": "op benchmarks", "d": "model"}
BUDGET_S = {"full": {"a": 200, "b": 60, "c": 110, "d": 90}, "quick": {"a": 110, "c": 50},
            "dry-run": {"a": 120, "b": 10, "c": 60, "d": 60}}
TEST_FILES = ["tests/test_instance_modulation.py", "tests/test_instance_avg_pool.py",
              "tests/test_instance_conv2d.py", "tests/test_backend.py"]
# Relative error ||out - ref|| / ||ref|| allowed against the float64 reference.
REL_TOL = {"float32": 1e-4, "bfloat16": 2e-2, "float16": 4e-3}


# ---------------------------------------------------------------------------
# Records: each stage appends dicts and the file is rewritten after each one
# ---------------------------------------------------------------------------


def _write_json(path: str, obj) -> None:
    _write_text(path, json.dumps(obj, indent=1, default=str) + "\n")


def _write_text(path: str, text: str) -> None:
    """Through ``inade.utils.files.write_text_atomic``; a plain temp file and rename where the
    package does not import (the check still reports)."""
    try:
        from inade.utils.files import write_text_atomic  # noqa: PLC0415
    except ImportError:
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
        return
    write_text_atomic(path, text)


class Stage:
    """The records of one stage, on disk after every :meth:`add`."""

    def __init__(self, out: str, key: str):
        self.path = os.path.join(out, f"stage_{key}.json")
        self.data = {"stage": key, "name": STAGES[key], "records": [], "done": False}

    def add(self, **record) -> dict:
        record.setdefault("time", time.strftime("%H:%M:%S"))
        self.data["records"].append(record)
        _write_json(self.path, self.data)
        print(f"[{self.data['stage']}] " + json.dumps(record, default=str)[:300], flush=True)
        return record

    def finish(self) -> None:
        self.data["done"] = True
        _write_json(self.path, self.data)


def _attempt(stage: Stage, what: str, fn, **fields):
    """Run ``fn()`` and record its result dict (or the error) under ``what``."""
    start = time.time()
    try:
        result = fn() or {}
        return stage.add(what=what, ok=result.pop("ok", True), seconds=round(time.time() - start, 2), **fields,
                         **result)
    except Exception as err:  # noqa: BLE001 - every failure is a finding, not the end of the run
        return stage.add(what=what, ok=False, seconds=round(time.time() - start, 2), **fields,
                         error=f"{type(err).__name__}: {err}"[:1500])


# ---------------------------------------------------------------------------
# Stage a: environment, extension, correctness sweep, tests
# ---------------------------------------------------------------------------


def _environment(device) -> dict:
    import torch  # noqa: PLC0415

    info = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda_runtime": torch.version.cuda,
            "device": str(device), "load_avg": os.getloadavg()}
    try:
        import triton  # noqa: PLC0415

        info["triton"] = triton.__version__
    except ImportError as err:
        info["triton"] = f"missing ({err})"
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, sms=p.multi_processor_count, capability=f"{p.major}.{p.minor}",
                    memory_GiB=round(p.total_memory / 2**30, 1))
    info["tools"] = {t: shutil.which(t) for t in ("nvcc", "ptxas", "compute-sanitizer", "ncu")}
    info["TRITON_INTERPRET"] = os.environ.get("TRITON_INTERPRET")
    return info


def _extension_status() -> dict:
    from inade.ops import _backend  # noqa: PLC0415

    ext = _backend.extension()
    return {"ok": ext is not None, "extension": None if ext is None else getattr(ext, "__file__", str(ext))}


def _build_extension(timeout: float) -> dict:
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", "--no-index", "-e", "."]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return {"ok": proc.returncode == 0, "returncode": proc.returncode, "tail": (proc.stdout + proc.stderr)[-1500:]}


def _rel_err(a, b) -> float:
    import torch  # noqa: PLC0415

    a, b = a.double(), b.double()
    if not torch.isfinite(a).all():
        return float("nan")
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def _op_cases(dry: bool):
    """``(op, label, make)``: ``make(device, dtype, channels_last)`` -> (fn, inputs with grad)."""
    import torch  # noqa: PLC0415

    import inade.ops as ops  # noqa: PLC0415

    def fmap(B, C, H, W, device, dtype, cl, g):
        x = torch.randn(B, C, H, W, generator=g).to(device, dtype)
        return x.contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)

    def ids(B, H, W, L, device, g):
        return torch.randint(0, L, (B, H, W), generator=g).to(device)

    def modulation(B, C, H, W, L):
        def make(device, dtype, cl, g):
            x, inst = fmap(B, C, H, W, device, dtype, cl, g), ids(B, H, W, L, device, g)
            gamma = torch.randn(B, L, C, generator=g).to(device, dtype)
            beta = torch.randn(B, L, C, generator=g).to(device, dtype)
            return (lambda x, gamma, beta: ops.instance_modulation(x, inst, gamma, beta, training=True)), [x, gamma, beta]
        return make

    def pool(B, C, H, W, L):
        def make(device, dtype, cl, g):
            x, inst = fmap(B, C, H, W, device, dtype, cl, g), ids(B, H, W, L, device, g)
            return (lambda x: ops.instance_avg_pool(x, inst, L)), [x]
        return make

    def conv(B, Ci, Co, H, W, L, k, s, renorm):
        def make(device, dtype, cl, g):
            x, inst = fmap(B, Ci, H, W, device, dtype, cl, g), ids(B, H, W, L, device, g)
            w = (torch.randn(Co, Ci, k, k, generator=g) / (Ci * k * k) ** 0.5).to(device, dtype)
            b = torch.randn(Co, generator=g).to(device, dtype)
            return (lambda x, w, b: ops.instance_conv2d(x, inst, w, b, s, k // 2, renorm)), [x, w, b]
        return make

    if dry:
        return [("instance_modulation", "B2-C5-7x9-L3", modulation(2, 5, 7, 9, 3)),
                ("instance_avg_pool", "B2-C5-7x9-L3", pool(2, 5, 7, 9, 3)),
                ("instance_conv2d", "B1-C4to6-7x9-k3-renorm", conv(1, 4, 6, 7, 9, 3, 3, 1, True))]
    # Odd sizes (every mask and tail path) at model-like channel counts; the op tests add the rest.
    return [("instance_modulation", "B2-C67-33x47-L7", modulation(2, 67, 33, 47, 7)),
            ("instance_avg_pool", "B2-C67-33x47-L70", pool(2, 67, 33, 47, 70)),
            ("instance_conv2d", "B2-C35to67-33x47-k3-s2-renorm", conv(2, 35, 67, 33, 47, 7, 3, 2, True))]


def _check_op(make, device, dtype, cl) -> dict:
    """Triton backend against the float64 reference: forward output and every input gradient."""
    import torch  # noqa: PLC0415

    from inade.ops import use_backend  # noqa: PLC0415

    g = torch.Generator().manual_seed(1)
    fn, inputs = make(device, dtype, cl, g)
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    with use_backend("triton"):
        out = fn(*leaves)
        dy = torch.randn(out.shape, generator=g).to(device, dtype)
        out.backward(dy)
    ref_leaves = [t.detach().double().requires_grad_() for t in inputs]
    with use_backend("reference"):
        ref = fn(*ref_leaves)
        ref.backward(dy.double())
    errs = {"out": _rel_err(out, ref)}
    errs.update({f"grad{i}": _rel_err(a.grad, b.grad) for i, (a, b) in enumerate(zip(leaves, ref_leaves))})
    tol = REL_TOL[str(dtype).replace("torch.", "")]
    layout_kept = out.dim() != 4 or (out.is_contiguous(memory_format=torch.channels_last) == cl or out.is_contiguous())
    worst = max(errs.values(), key=lambda v: float("inf") if v != v else v)
    return {"ok": worst == worst and worst <= tol and layout_kept, "rel_err": errs, "tol": tol,
            "layout_kept": layout_kept}


def _correctness(stage: Stage, device, mode: str) -> None:
    import torch  # noqa: PLC0415

    dry = mode == "dry-run"
    if dry:  # one layout per dtype: the dry run tests the script, the op tests cover the rest
        combos = [(torch.float32, False), (torch.bfloat16, True)]
    else:
        dtypes = (torch.float32, torch.bfloat16) if mode == "quick" else (torch.float32, torch.bfloat16, torch.float16)
        combos = [(d, cl) for d in dtypes for cl in (False, True)]
    for op, label, make in _op_cases(dry):
        for dtype, cl in combos:
            _attempt(stage, "correctness", lambda: _check_op(make, device, dtype, cl), op=op, shape=label,
                     dtype=str(dtype).replace("torch.", ""), layout="channels_last" if cl else "contiguous")


def _pytest(files, timeout: float, dry: bool) -> dict:
    import importlib.util  # noqa: PLC0415

    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files]
    if dry:  # the CPU dry run only checks that the test files collect
        cmd.append("--collect-only")
    elif importlib.util.find_spec("xdist") is not None:
        cmd += ["-n", str(min(8, os.cpu_count() or 1))]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        text, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as err:
        text = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        rc = "timeout"
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|errors?|skipped|xfailed|tests? collected)",
                                                 text.splitlines()[-1]
                                                if text.strip() else "")}
    failed = sorted(set(re.findall(r"^(?:FAILED|ERROR) (\S+)", text, re.MULTILINE)))[:40]
    return {"ok": rc == 0, "returncode": rc, "command": " ".join(cmd[2:]), "counts": counts, "failed": failed,
            "tail": text[-2500:]}


def stage_a(out: str, device, mode: str) -> None:
    stage = Stage(out, "a")
    dry = mode == "dry-run"
    stage.add(what="environment", ok=True, **_environment(device))
    ext = _attempt(stage, "extension", _extension_status)
    if not ext["ok"] and mode == "full":
        _attempt(stage, "extension build", lambda: _build_extension(100))
    _correctness(stage, device, mode)
    left = BUDGET_S[mode]["a"] - (time.time() - START) - 5
    files = TEST_FILES
    if left > 10:
        _attempt(stage, "pytest", lambda: _pytest(files, left, dry))
    else:
        stage.add(what="pytest", ok=False, error="no time left in the stage budget")
    stage.finish()


# ---------------------------------------------------------------------------
# Stage b: compute-sanitizer
# ---------------------------------------------------------------------------


def sanitize_workload() -> None:
    """One small case per kernel (each op forward and backward, float32 contiguous and
    bfloat16 channels-last): the program compute-sanitizer runs."""
    import torch  # noqa: PLC0415

    device = torch.device("cuda")
    for op, label, make in _op_cases(dry=True):
        for dtype, cl in ((torch.float32, False), (torch.bfloat16, True)):
            r = _check_op(make, device, dtype, cl)
            print(op, label, dtype, cl, "ok" if r["ok"] else f"MISMATCH {r['rel_err']}", flush=True)
    torch.cuda.synchronize()


def stage_b(out: str, device, mode: str) -> None:
    stage = Stage(out, "b")
    tool = shutil.which("compute-sanitizer")
    if mode == "dry-run" or tool is None or device.type != "cuda":
        why = "dry run" if mode == "dry-run" else ("no CUDA device" if device.type != "cuda" else
                                                     "compute-sanitizer not found")
        stage.add(what="compute-sanitizer", ok=True, skipped=why)
        stage.finish()
        return
    for name in ("memcheck", "racecheck"):
        left = BUDGET_S[mode]["b"] - (time.time() - START) - 3
        if left < 10:
            stage.add(what=name, ok=False, error="no time left in the stage budget")
            continue
        budget = left if name == "racecheck" else left * 0.5
        cmd = [tool, "--tool", name, "--error-exitcode", "9", "--print-limit", "20", sys.executable, "-c",
               "from bench.gpu_check import sanitize_workload; sanitize_workload()"]

        def run(cmd=cmd, budget=budget):
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=budget)
            text = proc.stdout + proc.stderr
            summary = re.findall(r"(?:ERROR|RACECHECK) SUMMARY: .*", text)
            return {"ok": proc.returncode == 0, "returncode": proc.returncode, "summary": summary[-3:],
                    "tail": text[-2000:]}

        _attempt(stage, name, run)
    stage.finish()


# ---------------------------------------------------------------------------
# Stage c: op benchmarks
# ---------------------------------------------------------------------------

# Tiny shapes in each benchmark's own tuple format (dry run only).
_DRY_SHAPES = {
    "bench.bench_instance_modulation": [("dry-B1-C8-8x8-L3", 1, 8, 8, 8, 3)],
    "bench.bench_instance_avg_pool": [("dry-B1-C8-8x8-L3", 1, 1, 8, 8, 8, 3)],
    "bench.bench_instance_conv2d": [("dry-B1-C4to4-8x8-k3s1-L3", 1, 4, 4, 8, 8, 3, 1, 1, 3)],
}


def stage_c(out: str, device, mode: str) -> None:
    import importlib  # noqa: PLC0415

    import torch  # noqa: PLC0415

    stage = Stage(out, "c")
    from bench import common  # noqa: PLC0415

    if mode == "dry-run":
        common.compiled = lambda fn: None  # no torch.compile baseline on the CPU dry run (minutes of C++ builds)
    try:  # the machine's own peaks first (CUDA events on a GPU): every figure is stated against them
        # the dry run shrinks every kernel (the 4x256x64x64 convolution alone takes over a minute in bf16
        # on a CPU without bf16 arithmetic); bf16 only where the CPU has it (the record says why not)
        small = dict(n=256, copy_MB=4, conv=(1, 32, 16)) if mode == "dry-run" else {}
        bf16, _ = common.bf16_supported(device)
        kernels = common.peak_kernels(device, **small, bf16=bf16)
        peaks = common.measure_peaks(device, kernels=kernels, what=common.peak_kernels_text(**small, bf16=bf16))
        stage.add(what="peaks", ok=True, **peaks)
    except Exception as err:  # noqa: BLE001
        stage.add(what="peaks", ok=False, error=f"{type(err).__name__}: {err}"[:500])
    dtypes = [torch.float32] if mode != "full" else [torch.float32, torch.bfloat16]
    modules = {}
    for name in _DRY_SHAPES:
        try:
            modules[name] = importlib.import_module(name)
        except Exception as err:  # noqa: BLE001
            stage.add(what="benchmark", module=name, ok=False, error=f"{type(err).__name__}: {err}"[:500])
    # Breadth first, so a stage cut off at its budget still has every op's headline shape:
    # (headline, float32) of each op, then (headline, bfloat16), then two more shapes of each.
    plan = []
    levels = [[(0, dtypes[0])]]
    if mode == "full":
        levels += [[(0, d) for d in dtypes[1:]], [(1, dtypes[0]), (2, dtypes[0])]]
    for level in levels:
        for name, module in modules.items():
            headline = [module.HEADLINE] if hasattr(module, "HEADLINE") else module.SHAPES[:1]
            shapes = _DRY_SHAPES[name] if mode == "dry-run" else headline + [s for s in module.SHAPES
                                                                             if s not in headline]
            plan += [(name, module, shapes[i], dtype) for i, dtype in level if i < len(shapes)]
    for name, module, shape, dtype in plan:
        def run(shape=shape, dtype=dtype, module=module):
            rows = module.run([shape], [dtype], device, 0.05 if mode == "dry-run" else 0.5)
            return {"ok": all("error" not in r for r in rows if r.get("backend") in ("triton", "cpp")), "rows": rows}
        _attempt(stage, "benchmark", run, module=name, shape=shape[0], dtype=str(dtype).replace("torch.", ""))
    stage.finish()


# ---------------------------------------------------------------------------
# Stage d: model
# ---------------------------------------------------------------------------


def _layout(B, H, W, label_nc, num_instances, device, seed=0):
    """A blocky synthetic layout: ``num_instances`` rectangles of random classes, compact ids."""
    import torch  # noqa: PLC0415

    g = torch.Generator().manual_seed(seed)
    gh, gw = 4, 8 if W > H else 4
    ids = torch.randint(0, num_instances, (B, gh, gw), generator=g)
    ids[:, 0, 0] = torch.arange(B) % num_instances
    inst = torch.nn.functional.interpolate(ids[:, None].float(), size=(H, W), mode="nearest")[:, 0].long()
    inst = torch.stack([torch.unique(i, return_inverse=True)[1] for i in inst])
    cls = torch.randint(0, label_nc, (B, num_instances), generator=g)
    label = torch.gather(cls, 1, inst.flatten(1)).view(B, H, W)
    return label.to(device), inst.to(device)


def _time_ms(fn, device, dry: bool) -> float:
    if device.type == "cuda":
        import triton.testing  # noqa: PLC0415

        return float(triton.testing.do_bench(fn, warmup=25, rep=100 if not dry else 10, return_mode="median"))
    start = time.perf_counter()  # the CPU dry run: one call, no warm-up (it tests the script)
    fn()
    return (time.perf_counter() - start) * 1e3


def _peak_mb(fn, device) -> float | None:
    import torch  # noqa: PLC0415

    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def _graph_replay(fn):
    """A CUDA graph of ``fn()`` (warmed up on a side stream), returned as a replay closure."""
    import torch  # noqa: PLC0415

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def stage_d(out: str, device, mode: str) -> None:
    import torch  # noqa: PLC0415

    import inade  # noqa: PLC0415

    stage = Stage(out, "d")
    dry = mode == "dry-run"
    try:
        from bench.bench_model_speed import official_style_ops  # noqa: PLC0415
    except Exception as err:  # noqa: BLE001
        official_style_ops = None
        stage.add(what="official-style path", ok=False, error=f"{type(err).__name__}: {err}"[:500])
    presets = [("cityscapes", 256, 512), ("celeba", 256, 256)]
    if dry:
        presets = [("celeba", 32, 32)]
    late, graphs = [], []  # torch.compile and CUDA graphs (slow to build) run after every eager row
    for preset, H, W in presets:
        over = {"crop_size": W} if not dry else {"crop_size": W, "ngf": 4}
        if preset == "cityscapes":
            over["aspect_ratio"] = W / H
        try:
            cfg = inade.config(preset, **over)
            torch.manual_seed(0)
            G = inade.Generator(cfg).to(device).eval()
        except Exception as err:  # noqa: BLE001
            stage.add(what="model", preset=preset, ok=False, error=f"{type(err).__name__}: {err}"[:800])
            continue
        infer, infer_bf16 = _inference_calls(G, cfg, H, W, device)
        variants = [("ours fp32", lambda f=infer: f)]
        if not dry:
            variants.append(("ours bf16 autocast", lambda f=infer_bf16: f))
        if official_style_ops is not None:
            variants.append(("official-style fp32", None))
        for name, build in variants:
            _inference_row(stage, preset, H, W, name, build, infer, device, dry, official_style_ops)
        _train_rows(stage, cfg, G, device, H, W, 2 if dry else 8, official_style_ops, dry)  # batch norm: B >= 2
        if not dry:
            late.append((preset, H, W, "ours fp32 torch.compile", lambda f=infer, G=G: _compiled_call(G, f), infer))
        if device.type == "cuda":  # last: a capture that fails on a host sync must not disturb other rows
            graphs.append((preset, H, W, "ours fp32 CUDA graph", lambda f=infer: _graph_replay(f), infer))
    for preset, H, W, name, build, infer in late + graphs:
        _inference_row(stage, preset, H, W, name, build, infer, device, dry, official_style_ops)
    stage.finish()


def _inference_calls(G, cfg, H, W, device):
    """``G(label, inst)`` at B=1 on a synthetic layout, in float32 and under bfloat16 autocast."""
    import torch  # noqa: PLC0415

    label, inst = _layout(1, H, W, cfg.label_nc, 10, device)
    L = int(inst.max()) + 1
    noise = torch.randn(1, L, 2, cfg.noise_nc, device=device)
    z = torch.randn(1, cfg.z_dim, device=device)

    def infer(model=G):
        with torch.no_grad():
            return model(label, inst, noise=noise, z=z)

    def infer_bf16():
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            return G(label, inst, noise=noise, z=z)

    return infer, infer_bf16


def _inference_row(stage, preset, H, W, name, build, infer, device, dry, official_style_ops) -> None:
    def run():
        if build is None:  # the official-style ops in place of ours, same modules and weights
            with official_style_ops():
                return {"ms": _time_ms(infer, device, dry), "peak_MB": _peak_mb(infer, device)}
        fn = build()
        return {"ms": _time_ms(fn, device, dry), "peak_MB": _peak_mb(fn, device)}
    _attempt(stage, "G inference B=1", run, preset=preset, size=f"{H}x{W}", variant=name)


def _compiled_call(G, infer):
    """``infer`` with ``torch.compile(G)`` in place of ``G`` (compiled outside the timing)."""
    import torch  # noqa: PLC0415

    compiled = torch.compile(G)

    def call():
        return infer(compiled)
    call()
    return call


def _train_rows(stage, cfg, G, device, H, W, B, official_style_ops, dry) -> None:
    """Training-step images/s and peak memory at batch ``B`` (G and D forward+backward, no VGG)."""
    import contextlib  # noqa: PLC0415

    import torch  # noqa: PLC0415

    import inade  # noqa: PLC0415

    def setup():
        from inade.models.losses import INADELoss  # noqa: PLC0415

        D = inade.Discriminator(cfg).to(device)
        crit = INADELoss(cfg, use_vgg=False)
        label, inst = _layout(B, H, W, cfg.label_nc, 10, device, seed=1)
        L = int(inst.max()) + 1
        noise = torch.randn(B, L, 2, cfg.noise_nc, device=device)
        z = torch.randn(B, cfg.z_dim, device=device)
        real = torch.rand(B, 3, H, W, device=device) * 2 - 1

        def step():
            G.train()
            D.train()
            G.zero_grad(set_to_none=True)
            D.zero_grad(set_to_none=True)
            fake = G(label, inst, noise=noise, z=z)
            sum(crit.generator_losses(D, label, inst, fake, real, None).values()).backward()
            sum(crit.discriminator_losses(D, label, inst, fake, real).values()).backward()
        return step

    for name in ("ours", "official-style"):
        if name == "official-style" and (official_style_ops is None or dry):
            continue

        def run(name=name):
            ctx = official_style_ops() if name == "official-style" else contextlib.nullcontext()
            with ctx:
                step = setup()
                ms = _time_ms(step, device, dry)
                return {"ms": ms, "images_per_s": B / (ms * 1e-3), "peak_MB": _peak_mb(step, device)}
        _attempt(stage, f"train step B={B}", run, preset=cfg.name, size=f"{H}x{W}", variant=name)


# ---------------------------------------------------------------------------
# The driver and the summary
# ---------------------------------------------------------------------------

START = time.time()


def _read_stage(out: str, key: str) -> dict | None:
    try:
        with open(os.path.join(out, f"stage_{key}.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return "" if v is None else str(v)


def summary_markdown(summary: dict) -> str:
    lines = [f"# GPU check ({summary['mode']})", "",
             f"Started {summary['started']}; {summary.get('device', '?')}. "
             + ("Dry run on CPU: the figures below test the script, they measure nothing." if summary["mode"] ==
                "dry-run" else "Every figure below was produced by this run on this device."), "",
             "| stage | status | seconds | records | failed |", "|---|---|---|---|---|"]
    for key, st in summary["stages"].items():
        lines.append(f"| {key} {STAGES[key]} | {st['status']} | {st.get('seconds', '')} | {st.get('records', 0)} | "
                     f"{st.get('failed', 0)} |")
    for key, st in summary["stages"].items():
        data = summary.get("details", {}).get(key)
        if not data:
            continue
        lines += ["", f"## {key}: {STAGES[key]}", ""]
        for r in data["records"]:
            if r.get("what") == "correctness":
                continue
            keys = [k for k in ("what", "op", "module", "preset", "size", "shape", "dtype", "variant") if k in r]
            head = " / ".join(_fmt(r[k]) for k in keys)
            vals = {k: r[k] for k in ("ms", "images_per_s", "peak_MB", "counts", "failed", "summary", "skipped",
                                      "error", "returncode", "gpu", "torch", "triton", "extension", "fp32_flops",
                                      "bf16_flops", "bf16_skipped", "copy_bytes_per_s") if r.get(k)}
            lines.append(f"- {'ok' if r.get('ok') else 'FAIL'}: {head}: " + "; ".join(
                f"{k} {_fmt(v)}" for k, v in vals.items()))
            for row in r.get("rows", []):
                lines.append("  - " + ", ".join(f"{k} {_fmt(row.get(k))}" for k in (
                    "backend", "fwd_ms", "fwd_bwd_ms", "fwd_bwd_GBps", "fwd_bwd_pct_peak_bw", "x_vs_official",
                    "x_vs_compile", "error") if row.get(k) is not None))
        corr = [r for r in data["records"] if r.get("what") == "correctness"]
        if corr:
            bad = [r for r in corr if not r.get("ok")]
            lines.append(f"- correctness against the float64 reference: {len(corr) - len(bad)}/{len(corr)} cases "
                         "within tolerance")
            for r in bad:
                lines.append(f"  - FAIL {r['op']} {r['shape']} {r['dtype']} {r['layout']}: "
                             f"{r.get('rel_err') or r.get('error')}")
    return "\n".join(lines) + "\n"


def run_all(out: str, mode: str) -> int:
    os.makedirs(out, exist_ok=True)
    stages = ["a", "c"] if mode == "quick" else list(STAGES)
    summary = {"mode": mode, "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
               "budget_s": BUDGET_S[mode], "stages": {k: {"status": "pending"} for k in stages}, "details": {}}
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH", "")) if p)
    if mode == "dry-run":
        env["TRITON_INTERPRET"] = "1"
    for key in stages:
        start = time.time()
        cmd = [sys.executable, "-m", "bench.gpu_check", "--out", out, "--stage", key, "--mode", mode]
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=BUDGET_S[mode][key] + 15)
            status = "done" if proc.returncode == 0 else f"exit {proc.returncode}"
        except subprocess.TimeoutExpired:
            status = "cut off at its budget"
        data = _read_stage(out, key)
        records = data["records"] if data else []
        if data and not data["done"] and status == "done":
            status = "incomplete"
        summary["stages"][key] = {"status": status, "seconds": round(time.time() - start, 1), "records": len(records),
                                  "failed": sum(1 for r in records if not r.get("ok"))}
        summary["details"][key] = data
        env_rec = next((r for r in records if r.get("what") == "environment"), None)
        if env_rec:
            summary["device"] = env_rec.get("gpu") or env_rec.get("device")
        _write_json(os.path.join(out, "summary.json"), summary)
        _write_text(os.path.join(out, "summary.md"), summary_markdown(summary))
    print(summary_markdown({**summary, "details": {}}), flush=True)
    return 0


def _stage_main(out: str, key: str, mode: str) -> None:
    import torch  # noqa: PLC0415

    device = torch.device("cuda" if torch.cuda.is_available() and mode != "dry-run" else "cpu")
    if mode == "dry-run":
        torch.set_num_threads(min(2, torch.get_num_threads()))
    {"a": stage_a, "b": stage_b, "c": stage_c, "d": stage_d}[key](out, device, mode)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--out", required=True, help="folder for stage_*.json, summary.json, summary.md")
    parser.add_argument("--quick", action="store_true", help="stage a and the headline shapes of c (< 3 min)")
    parser.add_argument("--dry-run", action="store_true", help="on CPU: interpreter, tiny shapes, no sanitizer")
    parser.add_argument("--stage", choices=list(STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=list(BUDGET_S), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick and args.dry_run:
        print("error: --quick and --dry-run exclude each other", file=sys.stderr)
        return 2
    mode = args.mode or ("dry-run" if args.dry_run else "quick" if args.quick else "full")
    if args.stage:
        _stage_main(args.out, args.stage, mode)
        return 0
    if mode != "dry-run":
        import torch  # noqa: PLC0415

        if not torch.cuda.is_available():
            print("error: no CUDA device: use --dry-run to test the script on CPU", file=sys.stderr)
            return 2
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as err:
        print(f"error: cannot create --out {args.out}: {err.strerror}", file=sys.stderr)
        return 2
    return run_all(args.out, mode)


if __name__ == "__main__":
    sys.exit(main())
