"""Timing, memory and reporting helpers shared by every benchmark in ``bench/``.

Timings: median of many runs after warm-up (``triton.testing.do_bench`` on GPU,
``torch.utils.benchmark`` on CPU). Peak memory: the CUDA allocator's peak on GPU,
the profiler's allocation trace on CPU (extra bytes allocated while the call runs,
inputs excluded). Results go to ``bench/results/<device>/<name>.json`` and are
printed as a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
import warnings
from pathlib import Path

from inade.utils.cpu import thread_defaults

thread_defaults()  # OMP_WAIT_POLICY=PASSIVE unless set, in this process's environment: every worker waits passively

import torch  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

# Peak DRAM bandwidth (bytes/s) of GPUs we may run on; CPU figures are not peaks.
PEAK_BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12}


def device_name(device: torch.device) -> str:
    """A short, file-name-safe name of the machine, e.g. ``cpu-2core`` or ``NVIDIA-H100-80GB-HBM3``."""
    if device.type == "cuda":
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", torch.cuda.get_device_name(device))
    return f"cpu-{torch.get_num_threads()}core"


def peak_bandwidth(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((bw for key, bw in PEAK_BANDWIDTH.items() if key in name), None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn, device: torch.device, min_run_time: float = 1.0) -> float:
    """Median milliseconds of ``fn()`` after warm-up."""
    if device.type == "cuda":
        import triton.testing  # noqa: PLC0415

        return float(triton.testing.do_bench(fn, warmup=50, rep=200, return_mode="median"))
    import torch.utils.benchmark as tb  # noqa: PLC0415

    fn()  # warm-up (compilation, caches)
    m = tb.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads()).blocked_autorange(
        min_run_time=min_run_time
    )
    return m.median * 1e3


def peak_extra_bytes(fn, device: torch.device) -> int:
    """Peak bytes allocated by ``fn()`` beyond what existed before it ran."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns()
    )
    current = peak = 0
    for e in events:
        current += e.nbytes()
        peak = max(peak, current)
    return peak


def fused_backend(device: torch.device) -> str:
    """The fused backend benchmarked on ``device``: ``cpp`` on CPU, ``triton`` on GPU."""
    return "cpp" if device.type == "cpu" else "triton"


def compiled(fn):
    """``torch.compile(fn)`` with fresh compile caches (Dynamo's recompile limit would
    otherwise silently turn the baseline back into eager after a few shapes), or
    ``None`` with a warning where compiling is unavailable."""
    torch._dynamo.reset()
    try:
        return torch.compile(fn, dynamic=False)
    except Exception as err:  # noqa: BLE001
        warnings.warn(f"torch.compile unavailable: {err}")
        return None


LAYOUTS = ("block", "random", "own")
SWEEP_INSTANCES = (1, 16, 64, 256)


def argument_parser(doc: str) -> argparse.ArgumentParser:
    """The options every op benchmark takes: ``--quick``, ``--min-run-time``, ``--no-write``,
    ``--layouts`` and ``--sweep-instances`` (see :func:`index_map`)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only the headline shape, float32")
    parser.add_argument("--min-run-time", type=float, default=1.0, help="seconds of timing per measurement (CPU)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not write bench/results")
    parser.add_argument("--layouts", default=None, metavar="A,B",
                        help=f"instead of the shape tables: the headline shape with each index-map layout of "
                             f"{','.join(LAYOUTS)} (block: 8x8-pixel blocks of random ids; random: an id drawn per "
                             f"pixel; own: every pixel its own instance, L = H*W), to <op>_layouts.json")
    parser.add_argument("--sweep-instances", action="store_true",
                        help=f"instead of the shape tables: the headline shape with L = "
                             f"{', '.join(map(str, SWEEP_INSTANCES))} (block and random maps), to <op>_instances.json")
    parser.add_argument("--rounds", type=int, default=1, metavar="N",
                        help="--layouts / --sweep-instances: run every configuration N times, one after another, "
                             "and keep each row's fastest round (a slow spell of a shared machine only adds time)")
    return parser


def parse(doc: str, argv=None):
    """``(args, device)``: the options of :func:`argument_parser` and the device to run on."""
    return argument_parser(doc).parse_args(argv), default_device()


def parse_layouts(text: str) -> list[str]:
    """``"block,random"`` -> ``["block", "random"]``; an unknown name is a one-line error (exit 2)."""
    layouts = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in layouts if t not in LAYOUTS]
    if bad or not layouts:
        raise SystemExit(f"error: --layouts takes names from {','.join(LAYOUTS)}, got {text!r}")
    return layouts


def index_map(B: int, H: int, W: int, L: int, layout: str, generator: torch.Generator) -> torch.Tensor:
    """``[B, H, W]`` int64 instance ids in ``[0, L)`` of one layout:

    * ``block``: 8x8-pixel blocks with random ids (instances are regions, ids come in runs),
    * ``random``: an id drawn independently per pixel (runs of about one pixel),
    * ``own``: every pixel its own instance (ids ``0 .. H*W-1``; needs ``L == H*W``).
    """
    if layout == "block":
        coarse = torch.randint(0, L, (B, max(1, H // 8), max(1, W // 8)), generator=generator)
        return torch.nn.functional.interpolate(coarse[:, None].float(), (H, W), mode="nearest")[:, 0].long()
    if layout == "random":
        return torch.randint(0, L, (B, H, W), generator=generator)
    if layout == "own":
        if L != H * W:
            raise ValueError(f"layout 'own' needs L == H*W = {H * W}, got {L}")
        return torch.arange(H * W).view(1, H, W).expand(B, H, W).contiguous()
    raise ValueError(f"unknown layout {layout!r}")


def layout_rows(rows: list[dict], layout: str, num_instances: int) -> list[dict]:
    """``rows`` tagged with the index-map layout and L (for the layout and L tables)."""
    return [{**r, "layout": layout, "L": num_instances} for r in rows]


def ratio_to_first_L(rows: list[dict], key: str = "fwd_bwd_ms") -> list[dict]:
    """Adds ``x_time_vs_L1``: each row's ``key`` over the row of the same backend and layout
    with the smallest L (the cost against the number of instances)."""
    first = {}
    for r in sorted(rows, key=lambda r: r["L"]):
        first.setdefault((r["backend"], r["layout"]), r.get(key))
    for r in rows:
        base = first.get((r["backend"], r["layout"]))
        if base and r.get(key):
            r["time_vs_L1"] = r[key] / base
    return rows


def run_layout_tables(args, device: torch.device, op_name: str, run_one, *, num_instances: int, pixels: int,
                      layout_backends, sweep_backends, columns: list[str], notes: str) -> None:
    """``--layouts`` / ``--sweep-instances`` of an op benchmark: rows of the headline shape
    per index-map layout (L = ``num_instances``; ``pixels`` = H*W for ``own``), or at each L
    of :data:`SWEEP_INSTANCES` with block and random maps, printed and written to
    ``<op_name>_layouts.json`` / ``<op_name>_instances.json``.

    ``run_one(L, layout, backends)`` returns the rows of the headline shape with ``L``
    instances; ``layout_backends(layout)`` (None: all) and ``sweep_backends`` pick the backends.
    """
    if args.rounds < 1:
        raise SystemExit(f"error: --rounds must be at least 1, got {args.rounds}")
    name = "layouts" if args.layouts else "instances"
    rounds = []
    for _ in range(args.rounds):
        rows = []
        if args.layouts:
            for layout in parse_layouts(args.layouts):
                n = pixels if layout == "own" else num_instances
                rows += layout_rows(run_one(n, layout, layout_backends(layout)), layout, n)
        else:
            for layout in ("block", "random"):
                for n in SWEEP_INSTANCES:
                    rows += layout_rows(run_one(n, layout, sweep_backends), layout, n)
        rounds.append(rows)
    rows = fastest_rounds(rounds) if args.rounds > 1 else rounds[0]
    if not args.layouts:
        rows = ratio_to_first_L(rows)
    print(markdown_table(rows, ["shape", "layout", "L", "backend", *columns, "time_vs_L1", "error"]))
    if args.rounds > 1:
        notes += f"; each row the fastest of {args.rounds} rounds (all configurations per round)"
    if not args.no_write:
        print("wrote", write_results(f"{op_name}_{name}", rows, device, notes + "; " + load_note()))


def fastest_rounds(rounds: list[list[dict]], key: str = "fwd_bwd_ms") -> list[dict]:
    """Each row (same layout, L, backend) from the round where its ``key`` was smallest, in the
    order of the first round; the speed-ups ``x_vs_<label>`` are recomputed between the kept
    rows (against the kept row of backend ``official-style`` / ``reference``)."""
    def ident(r):
        return r["layout"], r["L"], r["backend"]

    best = {}
    for rows in rounds:
        for r in rows:
            kept = best.get(ident(r))
            if kept is None or (r.get(key) is not None and (kept.get(key) is None or r[key] < kept[key])):
                best[ident(r)] = dict(r)
    out = [best[ident(r)] for r in rounds[0]]
    for label, base_name in (("official", "official-style"), ("reference", "reference")):
        for r in out:
            base = best.get((r["layout"], r["L"], base_name), {}).get(key)
            if f"x_vs_{label}" in r and base and r.get(key):
                r[f"x_vs_{label}"] = base / r[key]
    return out


def candidates(device: torch.device, op, official, plain_reference, *, compile_reference: bool = True,
               extra: dict | None = None) -> dict:
    """The backends every op benchmark compares, in table order: ``official-style``,
    ``reference``, ``compile(reference)`` (unless switched off or unavailable), ``extra``,
    then the fused backend (``op(*args)`` run under :func:`fused_backend`)."""
    from inade.ops import use_backend  # noqa: PLC0415

    out = {"official-style": official, "reference": plain_reference}
    if compile_reference and (fn := compiled(plain_reference)) is not None:
        out["compile(reference)"] = fn
    out.update(extra or {})
    fused = fused_backend(device)

    def run_fused(*args):
        with use_backend(fused):
            return op(*args)

    out[fused] = run_fused
    return out


def load_note() -> str:
    """The machine load and OpenMP wait policy, for the notes of a CPU result file."""
    return ("1/5/15-min load average after the run: %.1f %.1f %.1f (shared machine)" % os.getloadavg()
            + f"; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")


def time_forward_and_backward(forward, forward_backward, device: torch.device, min_run_time: float) -> dict:
    """``{fwd_ms, fwd_bwd_ms, peak_extra_MB}`` of two closures, or ``{error}`` when one cannot
    run (a baseline that fails is reported in the table, not fatal)."""
    try:
        fwd = median_ms(forward, device, min_run_time)
        fwd_bwd = median_ms(forward_backward, device, min_run_time)
        mem = peak_extra_bytes(forward_backward, device)
    except Exception as err:  # noqa: BLE001
        return {"error": f"{type(err).__name__}: {err}"[:200]}
    return {"fwd_ms": fwd, "fwd_bwd_ms": fwd_bwd, "peak_extra_MB": mem / 2**20}


def machine_info(device: torch.device) -> dict:
    info = {
        "device": device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
        "loadavg": [round(v, 2) for v in os.getloadavg()],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
    }
    try:
        import triton  # noqa: PLC0415

        info["triton"] = triton.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def write_results(name: str, rows: list[dict], device: torch.device, notes: str = "", **extra) -> Path:
    """Write ``rows`` (and any ``extra`` top-level fields, e.g. ``peaks``) to
    ``bench/results/<device>/<name>.json`` atomically and return the path."""
    out_dir = RESULTS / device_name(device)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    doc = {"machine": machine_info(device), "notes": notes, "rows": rows, **extra}
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """Rows as a Markdown table over ``columns`` (floats to 3 significant digits)."""

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------------------
# The method of every comparison (issue 20): each path in its own process,
# warm-up then N calls, min / median / spread, the machine, its load and its peaks
# ---------------------------------------------------------------------------

RESULT_PREFIX = "BENCH-RESULT "


def model_parser(doc: str, *, size_help: str, calls: int) -> argparse.ArgumentParser:
    """The options of the whole-model comparisons (bench_model_speed, bench_train_step):
    the public checkout, the model's size and the timing method."""
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--official-code", metavar="DIR", help="a checkout of tzt101/INADE to compare with")
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--size", type=int, default=256, help=size_help)
    p.add_argument("--instances", type=int, default=10)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--calls", type=int, default=calls)
    return p


def model_spec(args, device: torch.device) -> dict:
    """The part of every worker's spec that :func:`model_parser`'s options set."""
    return {"ngf": args.ngf, "size": args.size, "instances": args.instances, "device": str(device),
            "threads": args.threads, "official_code": args.official_code}


def write_report(name: str, rows: list[dict], device: torch.device, notes: list[str], peaks: dict, title: str,
                 table: str, more: str = "") -> tuple[Path, str]:
    """``(json path, Markdown text)``: ``rows``, ``notes`` and the machine's ``peaks`` to
    ``<name>.json``; ``# <title> (<device>)``, ``table``, the notes as a list and ``more``
    to ``<name>.md`` beside it."""
    from inade.utils.files import write_text_atomic  # noqa: PLC0415

    path = write_results(name, rows, device, notes="\n".join(notes), peaks=peaks)
    text = f"# {title} ({device_name(device)})\n\n{table}\n\n" + "\n".join(f"- {n}" for n in notes) + "\n" + more
    write_text_atomic(path.with_suffix(".md"), text)
    return path, text


def time_calls(fn, *, warmup: int, calls: int, sync=lambda: None, setup=None, clock=time.perf_counter) -> list[float]:
    """Seconds of each of ``calls`` calls of ``fn()`` after ``warmup`` untimed ones;
    ``setup()`` runs untimed before every call, ``sync()`` before each clock reading."""
    if warmup < 0 or calls < 1:
        raise ValueError(f"need warmup >= 0 and calls >= 1, got {warmup} and {calls}")
    for _ in range(warmup):
        if setup is not None:
            setup()
        fn()
    out = []
    for _ in range(calls):
        if setup is not None:
            setup()
        sync()
        t0 = clock()
        fn()
        sync()
        out.append(clock() - t0)
    return out


def sample_stats(seconds: list[float]) -> dict:
    """``{n, min_ms, median_ms, max_ms, spread}`` of call times; ``spread`` = max/min − 1
    (0.05: the slowest call took 5 % longer than the fastest)."""
    import statistics  # noqa: PLC0415

    if not seconds:
        raise ValueError("no samples")
    lo, hi = min(seconds), max(seconds)
    return {"n": len(seconds), "min_ms": lo * 1e3, "median_ms": statistics.median(seconds) * 1e3,
            "max_ms": hi * 1e3, "spread": hi / lo - 1 if lo > 0 else None}


def usage_snapshot() -> dict:
    """Process counters whose difference over the timed calls is reported: minor page faults,
    system and user CPU seconds, and the peak resident set (MB) so far."""
    import resource  # noqa: PLC0415

    u = resource.getrusage(resource.RUSAGE_SELF)
    return {"minflt": u.ru_minflt, "sys_s": u.ru_stime, "user_s": u.ru_utime, "maxrss_MB": u.ru_maxrss / 1024}


def usage_per_call(before: dict, after: dict, calls: int) -> dict:
    """Minor faults and system seconds per call between two :func:`usage_snapshot`, and the peak RSS."""
    return {"minor_faults_per_call": (after["minflt"] - before["minflt"]) / calls,
            "sys_s_per_call": (after["sys_s"] - before["sys_s"]) / calls,
            "peak_rss_MB": after["maxrss_MB"]}


def isolated(module: str, spec: dict, *, run=None, python: str | None = None, timeout: float | None = None) -> dict:
    """Run one measurement in a fresh process: ``python -m <module> --worker '<spec JSON>'``.

    The worker prints its result as one line ``BENCH-RESULT {json}`` (see :func:`worker_main`);
    no compiled graph, cache, allocator state or thread pool of one path reaches another.
    Returns the worker's dict with ``load_before`` / ``load_after`` (1-min load average) added,
    or ``{"error": ...}`` when the process failed (a failed path is a table entry, not fatal).
    """
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    run = run or subprocess.run
    cmd = [python or sys.executable, "-m", module, "--worker", json.dumps(spec)]
    load_before = os.getloadavg()[0]
    try:
        proc = run(cmd, capture_output=True, text=True, timeout=timeout)
    except Exception as err:  # noqa: BLE001 - a timeout is reported like a crash
        return {"error": f"{type(err).__name__}: {err}"[:300], "load_before": round(load_before, 2)}
    found = [line[len(RESULT_PREFIX):] for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not found:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit {proc.returncode}: {tail[0]}"[:300], "load_before": round(load_before, 2)}
    return {**json.loads(found[-1]), "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)}


def worker_main(measure, argv=None) -> bool:
    """In a benchmark's ``main``: when called as ``--worker SPEC``, run ``measure(spec)`` and print
    its dict as the ``BENCH-RESULT`` line; returns whether it was a worker call."""
    import sys  # noqa: PLC0415

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "--worker":
        return False
    result = measure(json.loads(argv[1]))
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return True


PRECISIONS = ("fp32", "bf16")


def precision_context(precision: str, device: torch.device):
    """The context a call runs in: nothing for ``fp32``, bfloat16 autocast for ``bf16``
    (the same on both sides of a comparison)."""
    import contextlib  # noqa: PLC0415

    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def compare_same_precision(rows: list[dict], *, ours: str = "ours", base: str, match=("call", "precision", "batch"),
                           cross_precision: dict | None = None) -> list[dict]:
    """Adds to each ``ours`` row the speed-up over the ``base`` row that agrees on every field of
    ``match`` — precision included, so fp32 meets fp32 and bf16 autocast meets bf16 autocast:
    ``x_by_min``, ``x_by_median`` and ``memory_ratio`` (ours / base peak). A row with no partner
    gets none. ``cross_precision={"ours": "bf16", "base": "fp32"}`` adds, per call, a row whose
    name says ``cross-precision`` (never silently mixed into the same-precision rows)."""
    def key(r):
        return tuple(r.get(f) for f in match)

    by = {key(r): r for r in rows if r["path"] == base}
    out = [dict(r) for r in rows]
    for r in out:
        if r["path"] != ours or "error" in r or "skipped" in r:
            continue
        b = by.get(key(r))
        if b is None or "error" in b or "skipped" in b:
            continue
        r.update(_ratios(r, b))
    if cross_precision:
        for r in [r for r in out if r["path"] == ours and r.get("precision") == cross_precision["ours"]]:
            partner = dict(r, precision=cross_precision["base"])
            b = by.get(key(partner))
            if b is not None and "error" not in b and "error" not in r:
                out.append({**{k: r[k] for k in r if k in (*match, "path", "min_ms", "median_ms", "spread")},
                            "call": f"{r['call']} (cross-precision: ours {cross_precision['ours']} vs "
                                    f"{base} {cross_precision['base']})", **_ratios(r, b)})
    return out


def _ratios(r: dict, b: dict) -> dict:
    out = {"x_by_min": b["min_ms"] / r["min_ms"], "x_by_median": b["median_ms"] / r["median_ms"]}
    if r.get("peak_MB") and b.get("peak_MB"):
        out["memory_ratio"] = r["peak_MB"] / b["peak_MB"]
    return out


def bf16_supported(device: torch.device) -> tuple[bool, str]:
    """``(ok, reason)``: whether bfloat16 rows are worth running on ``device`` — always on a GPU,
    on a CPU only with bfloat16 arithmetic (:func:`inade.utils.cpu.cpu_has_bf16`; without it a
    bfloat16 convolution runs 10–250× slower than float32, minutes per row). ``reason`` is the
    one line a table shows for a skipped row ('' when ok)."""
    from inade.utils.cpu import cpu_has_bf16, no_bf16_reason  # noqa: PLC0415

    if device.type != "cpu" or cpu_has_bf16():
        return True, ""
    return False, f"bf16 skipped: {no_bf16_reason()}"


def progress(iterable=None, *, desc: str, total: int | None = None, unit: str = "row"):
    """A tqdm bar on stderr over ``iterable`` (every benchmark shows where it is; none where stderr
    is not a terminal, so logs and captured output stay clean)."""
    from tqdm import tqdm  # noqa: PLC0415

    return tqdm(iterable, desc=desc, total=total, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False,
                disable=None)


def interruptible(main):
    """``main`` with Ctrl-C ending it in one line (``interrupted``, exit 130) instead of a traceback;
    what a benchmark wrote before it stays (every result file is written atomically)."""
    import functools  # noqa: PLC0415

    @functools.wraps(main)
    def run(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except KeyboardInterrupt:
            print(f"\ninterrupted: {sys.argv[0].rsplit('/', 1)[-1] if sys.argv else 'benchmark'} stopped "
                  "(results written so far are kept)", file=sys.stderr, flush=True)
            return 130
    return run


def peak_kernels_text(n: int = 2048, copy_MB: int = 256, conv: tuple = (4, 256, 64), bf16: bool = True) -> str:
    """What :func:`peak_kernels` of these sizes runs, in words (the ``method`` of the peaks)."""
    B, C, S = conv
    return (f"torch.mm of {n}x{n} and a 3x3 conv2d {C}->{C} on {B}x{S}x{S} in {'fp32/bf16' if bf16 else 'fp32'} "
            f"(the faster is the FLOP peak), a {copy_MB} MB copy")


def peak_kernels(device: torch.device, n: int = 2048, copy_MB: int = 256, conv: tuple = (4, 256, 64),
                 bf16: bool | None = None) -> dict:
    """``{name: (fn, work)}`` of the peak measurements: ``mm_fp32`` and ``mm_bf16`` (an ``n×n``
    ``torch.mm``, work = 2n³ FLOPs), ``conv_fp32`` and ``conv_bf16`` (a dense 3×3 ``F.conv2d``
    of ``B×C×S×S`` to C channels, work = 2·MACs: on some CPUs oneDNN's convolutions run wider
    vectors than the BLAS behind ``mm``) and ``copy`` (``copy_MB`` copied, work = bytes read +
    written). ``bf16=None``: the bfloat16 kernels only where :func:`bf16_supported`."""
    if bf16 is None:
        bf16 = bf16_supported(device)[0]
    g = torch.Generator(device="cpu").manual_seed(0)
    a32, b32 = (torch.randn(n, n, generator=g).to(device) for _ in range(2))
    a16, b16 = a32.bfloat16(), b32.bfloat16()
    B, C, S = conv
    x32, w32 = torch.randn(B, C, S, S, generator=g).to(device), torch.randn(C, C, 3, 3, generator=g).to(device)
    x16, w16 = x32.bfloat16(), w32.bfloat16()
    conv_flops = 2 * B * C * S * S * C * 9
    src = torch.empty(copy_MB * 2**20 // 4, device=device).fill_(1.0)
    dst = torch.empty_like(src).fill_(0.0)
    conv2d = torch.nn.functional.conv2d
    out = {"mm_fp32": (lambda: torch.mm(a32, b32), 2 * n**3),
           "mm_bf16": (lambda: torch.mm(a16, b16), 2 * n**3),
           "conv_fp32": (lambda: conv2d(x32, w32, padding=1), conv_flops),
           "conv_bf16": (lambda: conv2d(x16, w16, padding=1), conv_flops),
           "copy": (lambda: dst.copy_(src), 2 * src.numel() * src.element_size())}
    return out if bf16 else {k: v for k, v in out.items() if "bf16" not in k}


def cuda_event_seconds(fn) -> float:
    """Seconds of one ``fn()`` between two CUDA events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def wall_seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure_peaks(device: torch.device, *, repeats: int = 10, timer=None, kernels: dict | None = None,
                  what: str | None = None) -> dict:
    """The machine's own peaks, measured now: ``fp32_flops`` and ``bf16_flops`` (FLOP/s of a large
    ``torch.mm``) and ``copy_bytes_per_s`` (a large copy), each the best of ``repeats`` timed
    calls after one warm-up (CUDA events on GPU, the wall clock on CPU). Every figure of a
    benchmark is then stated as a fraction of these (:func:`fraction_of_peak`)."""
    timer = timer or (cuda_event_seconds if device.type == "cuda" else wall_seconds)
    bf16, why = bf16_supported(device)
    kernels = kernels if kernels is not None else peak_kernels(device, bf16=bf16)
    out = {}
    for name, (fn, work) in progress(kernels.items(), desc="peaks", unit="kernel"):
        fn()
        best = min(timer(fn) for _ in range(repeats))
        out[name if name == "copy" else f"{name}_flops"] = work / best
    if not any("bf16" in k for k in kernels):
        out["bf16_skipped"] = why or "bf16 not measured"
    if "copy" in out:
        out["copy_bytes_per_s"] = out.pop("copy")
    for precision in ("fp32", "bf16"):  # the FLOP peak of a precision: its faster dense kernel
        rates = [out[k] for k in (f"mm_{precision}_flops", f"conv_{precision}_flops") if k in out]
        if rates:
            out[f"{precision}_flops"] = max(rates)
    out["method"] = (f"best of {repeats} after a warm-up: {what or peak_kernels_text(bf16='mm_bf16' in kernels)} "
                     f"({'CUDA events' if device.type == 'cuda' else 'wall clock'}, {torch.get_num_threads()} threads)")
    return out


def fraction_of_peak(work: float, seconds: float, peak: float | None) -> float | None:
    """``work / seconds / peak``: the share of the machine's measured peak a call reached."""
    if not peak or not seconds:
        return None
    return work / seconds / peak
