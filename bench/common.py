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
import time
import warnings
from pathlib import Path

import torch

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


def argument_parser(doc: str) -> argparse.ArgumentParser:
    """The options every op benchmark takes: ``--quick``, ``--min-run-time``, ``--no-write``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only the headline shape, float32")
    parser.add_argument("--min-run-time", type=float, default=1.0, help="seconds of timing per measurement (CPU)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not write bench/results")
    return parser


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
    }
    try:
        import triton  # noqa: PLC0415

        info["triton"] = triton.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def write_results(name: str, rows: list[dict], device: torch.device, notes: str = "") -> Path:
    """Write ``rows`` to ``bench/results/<device>/<name>.json`` atomically and return the path."""
    out_dir = RESULTS / device_name(device)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"machine": machine_info(device), "notes": notes, "rows": rows}, indent=1) + "\n")
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
