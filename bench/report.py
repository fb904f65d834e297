"""Every benchmark figure of README.md and docs/PERFORMANCE.md, regenerated from the
committed JSON, and the plots beside it:

    python -m bench.report            # rewrite the tables in both files, write the plots
    python -m bench.report --check    # exit 1 if a table in a file differs from the JSON

A table lives between ``<!-- bench:table NAME -->`` and ``<!-- bench:end -->`` in a
Markdown file; NAME is one of :data:`TABLES`. Text outside the markers is never touched,
so the prose around a table should not restate its numbers. Plots (PNG, with matplotlib,
the optional ``bench`` extra; skipped with a note without it) go to
``bench/results/<device>/plots/``.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DEVICE = "cpu-2core"
DOCS = (ROOT / "README.md", ROOT / "docs" / "PERFORMANCE.md")
BLOCK = re.compile(r"(<!-- bench:table (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- bench:end -->)", re.S)


# ---------------------------------------------------------------------------
# Reading the JSON
# ---------------------------------------------------------------------------


def load(name: str, results: Path | None = None, device: str = DEVICE) -> dict | None:
    path = (results or RESULTS) / device / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


OPS = ("instance_modulation", "instance_avg_pool", "instance_conv2d")


def op_docs(suffix: str, results: Path | None = None, device: str = DEVICE):
    """``(op, doc)`` of each op of :data:`OPS` whose ``<op>_<suffix>.json`` is committed."""
    for op in OPS:
        doc = load(f"{op}_{suffix}", results, device)
        if doc is not None:
            yield op, doc


def fmt(v, digits: int = 3) -> str:
    """A number to ``digits`` significant digits (no exponent for everyday sizes); '' for None."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        if v != 0 and (abs(v) >= 10 ** digits or abs(v) < 1e-3):
            return f"{v:.{digits}g}"
        return f"{float(f'{v:.{digits}g}'):g}"
    return str(v)


def ms(v) -> str:
    """Milliseconds as ``X ms`` or ``X s``."""
    if v is None:
        return ""
    return f"{fmt(v / 1e3)} s" if v >= 1000 else f"{fmt(v)} ms"


def pct(v) -> str:
    return "" if v is None else f"{v * 100:.0f} %"


def times(v) -> str:
    return "" if v is None else f"{v:.2f}×"


def table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


PEAK_SOURCES = ("peaks", "train_step", "train_step_fp32_recheck", "model_speed")


def peaks_of(name: str, results) -> dict:
    """The peaks ``<name>.json`` recorded ({} where none), with ``mm_<precision>_flops`` filled
    in from ``<precision>_flops`` for older files that have the mm figure only."""
    got = (load(name, results) or {}).get("peaks") or {}
    return {**{f"mm_{p}_flops": got.get(f"{p}_flops") for p in ("fp32", "bf16")}, **got} if got else {}


def best_peaks(results) -> dict:
    """The highest of each peak measured on this machine (``peaks.json`` and the peaks each
    model benchmark measured at its start): on a shared machine a measurement taken during
    a busy spell is low, and a model's best (min) time must be set against the machine's
    best, not against a busy spell's."""
    out = {}
    for name in PEAK_SOURCES:
        for key, value in peaks_of(name, results).items():
            if isinstance(value, (int, float)):
                out[key] = max(out.get(key, 0.0), float(value))
    return out


def flop_fraction(row: dict, peaks: dict) -> float | None:
    """``row``'s FLOPs over its min time and the peak of its precision."""
    peak = peaks.get("fp32_flops" if row.get("precision") == "fp32" else "bf16_flops")
    if not row.get("gflop") or not row.get("min_ms") or not peak:
        return None
    return row["gflop"] * 1e9 / (row["min_ms"] / 1e3) / peak


def over_budget(row: dict) -> bool:
    """Whether a budget-batch row's measured peak is over its budget (``budget_MB`` is rounded)."""
    return row["peak_MB"] > row.get("budget_MB", float("inf")) + 0.5


def load_range(rows: list[dict]) -> str:
    loads = [r[k] for r in rows for k in ("load_before", "load_after", "load_1min") if r.get(k) is not None]
    return f"{min(loads):.1f}–{max(loads):.1f}" if loads else "not recorded"


# ---------------------------------------------------------------------------
# The tables
# ---------------------------------------------------------------------------


def t_peaks(results) -> str:
    p = best_peaks(results)
    if not p:
        return "*(no peaks measured yet: `python -m bench.peaks`)*"
    rows = []
    for name in PEAK_SOURCES:
        got = peaks_of(name, results)
        if got:
            rows.append([f"`{name}.json`"] + [f"{fmt(got[k] / 1e9)} GFLOP/s" if got.get(k) else "" for k in (
                "mm_fp32_flops", "conv_fp32_flops", "mm_bf16_flops", "conv_bf16_flops")]
                + [f"{fmt(got['copy_bytes_per_s'] / 1e9)} GB/s" if got.get("copy_bytes_per_s") else ""])
    rows.append(["**highest: the peaks used below**", f"**{fmt(p['fp32_flops'] / 1e9)} GFLOP/s** (float32)", "",
                 f"**{fmt(p['bf16_flops'] / 1e9)} GFLOP/s** (bfloat16)", "",
                 f"**{fmt(p['copy_bytes_per_s'] / 1e9)} GB/s**" if p.get("copy_bytes_per_s") else ""])
    m = (load("peaks", results) or {}).get("machine")
    text = table(["measured in", "`torch.mm` 2048², float32", "3×3 conv 256→256, 4×64², float32",
                  "`torch.mm`, bfloat16", "conv, bfloat16", "copy, 256 MB"], rows)
    if m:
        text += (f"\n\nEach the best of 5 or 10 timed calls after a warm-up. {m['processor']}, {m['threads']} threads, torch {m['torch']}, "
                 f"{m['date']}; 1-min load average {m['loadavg'][0]:.1f} when `peaks.json` was measured.")
    return text


def _train_rows(results, name: str = "train_step"):
    doc = load(name, results)
    return (doc or {}).get("rows", []), (doc or {})


def t_train_headline(results) -> str:
    rows, doc = _train_rows(results)
    if not rows:
        return "*(no train_step.json yet: `python -m bench.bench_train_step --official-code DIR`)*"
    peaks = best_peaks(results)
    out = []
    for r in rows:
        if r["path"] != "ours" or "x_by_min" not in r:
            continue
        batch = f"{r['batch']}" + (" (budget)" if r.get("budget_batch") and r["batch"] > 2 else "")
        out.append([f"{'float32' if r['precision'] == 'fp32' else 'bfloat16 autocast'}, batch {batch}",
                    fmt(r["images_per_s"]), times(r["x_by_min"]), times(r["x_by_median"]),
                    fmt(r.get("memory_ratio")), pct(flop_fraction(r, peaks))])
    for r in rows:
        if r["path"] == "ours" and r.get("budget_x_batch"):
            out.append([f"{'over the memory budget' if over_budget(r) else 'same memory'} ({r.get('budget_MB')} MB), "
                        f"{'float32' if r['precision'] == 'fp32' else 'bf16'}: "
                        f"batch {r['batch']} ({r['peak_MB']:.0f} MB) against {round(r['batch'] / r['budget_x_batch'])}",
                        fmt(r["images_per_s"]), times(r["budget_x_images_per_s"]) + " images/s", "", "", ""])
    return table(["training iteration, ours vs public code", "ours, images/s", "speed-up by min",
                  "by median", "memory, ours / public", "ours, % of FLOP peak"], out)


def t_train_step(results, name: str = "train_step") -> str:
    rows, doc = _train_rows(results, name)
    if not rows:
        return f"*(no {name}.json yet)*"
    peaks = best_peaks(results)
    out = []
    for r in rows:
        if "error" in r or "skipped" in r:
            out.append([r["path"], r["precision"], str(r["batch"]),
                        r["skipped"] if "skipped" in r else "error: " + r["error"][:80]] + [""] * 9)
            continue
        over = r.get("budget_batch") and over_budget(r)
        out.append([r["path"], r["precision"], str(r["batch"]) + (" ‡" if over else " †" if r.get("budget_batch") else ""),
                    ms(r["min_ms"]), ms(r["median_ms"]), pct(r["spread"]), fmt(r["images_per_s"]),
                    f"{r['peak_MB']:.0f}", pct(flop_fraction(r, peaks)), times(r.get("x_by_min")),
                    fmt(r.get("minor_faults_per_call") / 1e6 if r.get("minor_faults_per_call") is not None else None),
                    fmt(r.get("sys_s_per_call")), f"{r.get('load_before', 0):.1f} / {r.get('load_after', 0):.1f}"])
    text = table(["path", "precision", "batch", "min", "median", "spread", "images/s", "peak MB", "% FLOP peak",
                  "speed-up by min", "minor faults / iter (M)", "system s / iter", "load before / after"], out,
                 "lllrrrrrrrrrr")
    notes = doc.get("notes", "").splitlines()
    over = ("‡ the batch the memory line predicted for the budget, measured over it (a run before the "
            "benchmark checked the measured peak; it now steps down until one fits). ")
    return (text + "\n\n† the batch of the memory budget. " + (over if "‡" in text else "")
            + " ".join(n.rstrip(".") + "." for n in notes if n))


def t_model_speed(results) -> str:
    doc = load("model_speed", results)
    if doc is None:
        return "*(no model_speed.json yet)*"
    rows = doc["rows"]
    peaks = best_peaks(results)
    if rows and "min_ms" in rows[0]:  # the separate-process method
        out = []
        for r in rows:
            if r.get("skipped"):
                out.append([r["call"], r["precision"], r["skipped"], "", "", "", "", ""])
                continue
            if r["path"] != "ours" or "x_by_min" not in r:
                continue
            out.append([r["call"], r["precision"], ms(r["min_ms"]), times(r["x_by_min"]), times(r["x_by_median"]),
                        pct(r.get("spread")), fmt(r.get("memory_ratio")), pct(flop_fraction(r, peaks))])
        return table(["call (B=1)", "precision", "ours, min", "speed-up by min", "by median", "ours' spread",
                      "memory, ours / public", "ours, % of FLOP peak"], out, "llrrrrrr") + (
            f"\n\nPeak memory: extra bytes allocated during one call (profiled). 1-min load average before/after "
            f"the rows: {load_range(rows)}. " + " ".join(n.rstrip(".") + "." for n in doc.get("notes", "").splitlines()[:1]))
    out = []  # the earlier in-process, interleaved-median method
    for r in rows:
        if r["path"] != "ours" or "speedup" not in r or "bf16" in r["call"]:
            continue
        out.append([r["call"], ms(r["median_ms"]), times(r["speedup"]), fmt(r.get("memory_ours_over_baseline"))])
    return table(["call (B=1), float32 both sides", "ours, median", "speed-up by median (in one process)",
                  "memory, ours / public"], out) + (
        "\n\nEarlier method: both codes in one process, calls interleaved, medians; load "
        f"{load_range(rows)}. Not comparable with the separate-process figures above.")


def t_export(results) -> str:
    """bench_export: the exported generator (onnxruntime, the AOTInductor .pt2) against eager."""
    doc = load("export", results)
    if doc is None:
        return "*(no export.json yet: `python -m bench.bench_export`)*"
    rows = doc["rows"]
    out = [[r["path"], ms(r.get("min_ms")), ms(r.get("median_ms")), times(r.get("x_vs_eager_by_min")),
            times(r.get("x_vs_eager_by_median")), pct(r.get("spread")), fmt(r.get("cpu_s_per_call")),
            fmt(r.get("max_rel_err"), 2),
            "" if r.get("export_s") is None else f"{r['export_s']:.0f} s", fmt(r.get("file_MB")),
            r.get("error", "")[:80]] for r in rows]
    return table(["G inference (B=1, fp32)", "min", "median", "vs eager, by min", "by median", "spread",
                  "CPU s per call", "max rel. error", "export time", "file MB", "error"], out, "lrrrrrrrrrl") + (
        f"\n\n1-min load average before/after the rows: {load_range(rows)}. "
        + " ".join(n.rstrip(".") + "." for n in doc.get("notes", "").splitlines() if n))


def t_ops_quick(results) -> str:
    peaks = best_peaks(results)
    out = []
    for op, doc in op_docs("quick", results):
        by = {r["backend"]: r for r in doc["rows"]}
        ours, off, comp = by.get("cpp"), by.get("official-style"), by.get("compile(reference)")
        if ours is None:
            continue
        rate, frac, which = op_fraction(ours, peaks)
        out.append([f"`{op}`", ours["shape"], ms(ours["fwd_bwd_ms"]), ms(off["fwd_bwd_ms"]) if off else "",
                    times(ours.get("x_vs_official")), ms(comp["fwd_bwd_ms"]) if comp else "",
                    rate, f"{pct(frac)} of {which}" if frac is not None else "",
                    f"{ours['peak_extra_MB']:.0f} / {off['peak_extra_MB']:.0f}" if off else ""])
    return table(["op, forward+backward, float32", "shape", "ours (C++)", "official-style", "speed-up",
                  "`torch.compile(reference)`", "ours: floor bytes or FLOPs per second", "share of the peak",
                  "peak extra MB, ours / official"], out, "llrrrrrrr")


def op_fraction(row: dict, peaks: dict) -> tuple[str, float | None, str]:
    """``(rate, fraction, peak name)`` of an op row: the convolution against the float32 FLOP
    peak (it is compute-bound), the others' floor bytes against the copy peak."""
    if row.get("fwd_bwd_GFLOPs"):
        peak = peaks.get("fp32_flops")
        return (f"{fmt(row['fwd_bwd_GFLOPs'])} GFLOP/s", row["fwd_bwd_GFLOPs"] * 1e9 / peak if peak else None,
                "fp32 dense-kernel peak")
    gbps = row.get("fwd_bwd_GBps")
    peak = peaks.get("copy_bytes_per_s")
    return (f"{fmt(gbps)} GB/s" if gbps else "", gbps * 1e9 / peak if gbps and peak else None, "copy peak")


def t_ops_layouts(results) -> str:
    out = []
    for op, doc in op_docs("layouts", results):
        cells = []
        for layout in ("block", "random", "own"):
            r = next((r for r in doc["rows"] if r["layout"] == layout and r["backend"] == "cpp"), None)
            if r is None:
                cells.append("")
                continue
            extra = f" (L = {r['L']})" if layout == "own" else ""
            cells.append(ms(r["fwd_bwd_ms"]) + extra + (f", {times(r['x_vs_official'])} official-style"
                                                        if r.get("x_vs_official") else ""))
        out.append([f"`{op}` {doc['rows'][0]['shape']}"] + cells)
    return table(["op, forward+backward (ours)", "8×8 blocks", "random id per pixel", "every pixel its own instance"],
                 out, "lrrr")


def t_ops_instances(results) -> str:
    out = []
    for op, doc in op_docs("instances", results):
        cells = []
        for layout in ("block", "random"):
            rs = sorted((r for r in doc["rows"] if r["layout"] == layout and r["backend"] == "cpp"), key=lambda r: r["L"])
            cells.append(" / ".join(fmt(r.get("time_vs_L1"), 3) for r in rs if r["L"] > 1))
        off = sorted((r for r in doc["rows"] if r["layout"] == "block" and r["backend"] == "official-style"),
                     key=lambda r: r["L"])
        cells.append(" → ".join(ms(r["fwd_bwd_ms"]) for r in off[:: max(1, len(off) - 1)]))
        out.append([f"`{op}` " + re.sub(r"-L\d+$", "", doc["rows"][0]["shape"])] + cells)
    return table(["op, forward+backward: time at L = 16 / 64 / 256 over L = 1", "block maps", "random ids",
                  "official-style, L = 1 → 256"], out, "llll")


def t_params_flops(results) -> str:
    doc = load("models_params_flops", results)
    if doc is None:
        return ""
    out = [[r["config"], r["output"], f"{r['params']:,}", f"{r['paper_params_M']} M" if r.get("paper_params_M") else "",
            fmt(r["gmacs_paper_convention"], 4), f"{r['paper_gflops']} G" if r.get("paper_gflops") else "",
            fmt(r["gflops_all"], 4)] for r in doc["rows"] if r.get("paper_params_M")]
    return table(["configuration", "output", "generator params (ours = public code)", "paper", "GMACs conv+linear",
                  "paper \"FLOPs\"", "GFLOP per inference (`inade.flops`)"], out, "llrrrrr")


BREAKDOWN_GROUPS = {
    "dense": "dense convolutions and matrix products",
    "instance_modulation": "`instance_modulation` (the norms)",
    "instance_avg_pool": "`instance_avg_pool`",
    "instance_conv2d": "`instance_conv2d`",
    "elementwise": "other elementwise passes and reductions",
    "layout": "layout conversions and other copies",
    "allocation": "allocation and zero-fill",
    "other": "other: dispatch, views, autograd, Python, unprofiled",
}
BREAKDOWN_CALLS = ("G inference", "G fwd+bwd", "train iteration")


def t_breakdown(results, name: str = "breakdown") -> str:
    """Where the time of each call goes (``bench.breakdown``): ms and share of the profiled call
    per group, and each group against its floor (FLOPs over the FLOP peak, or the bytes floor
    over the copy peak, both measured on the machine that ran it)."""
    doc = load(name, results)
    if doc is None:
        return f"*(no {name}.json yet: `python -m bench.breakdown`)*"
    calls = {c["call"]: c for c in doc.get("calls", []) if "error" not in c}
    order = [c for c in BREAKDOWN_CALLS if c in calls]
    by = {(r["call"], r["group"]): r for r in doc["rows"]}
    out = []
    for group, label in BREAKDOWN_GROUPS.items():
        cells = [label]
        for call in order:
            r = by.get((call, group))
            if r is None or not r["ms"]:
                cells += ["", ""]
                continue
            cells.append(f"{ms(r['ms'])} ({pct(r['share'])})")
            peak = {"compute": "FLOP peak", "memory": "copy peak"}.get(r.get("kind"))
            cells.append(f"{pct(r['fraction'])} of {peak}" if peak and r.get("fraction") is not None else "")
        out.append(cells)
    out.append(["**the profiled call**"] + [x for c in order for x in (f"**{ms(calls[c]['profiled_ms'])}**", "")])
    out.append(["timed calls: min / median (spread)"]
               + [x for c in order for x in (f"{ms(calls[c]['min_ms'])} / {ms(calls[c]['median_ms'])} "
                                               f"({pct(calls[c]['spread'])})", "")])
    out.append(["whole call, by min: FLOPs / float32 FLOP peak"]
               + [x for c in order for x in ("", f"**{pct(calls[c].get('flop_fraction'))}** "
                                                 f"({fmt(calls[c]['flops'] / 1e9)} GFLOP)")])
    if any(calls[c].get("cpu_flop_fraction") for c in order):
        out.append(["the same in CPU time (does not move with the load)"]
                   + [x for c in order for x in ("", pct(calls[c].get("cpu_flop_fraction")))])
    header = ["group"] + [x for c in order for x in (f"{c}: ms (share)", "of its floor")]
    text = table(header, out, "l" + "rr" * len(order))
    cpu, peaks = doc.get("cpu") or {}, doc.get("peaks") or {}
    m = doc.get("machine", {})
    what = (f"{cpu.get('cpu_model') or m.get('processor', '?')} ({cpu.get('cpu_capability', '?')}, "
            f"{'with' if cpu.get('cpu_bf16') else 'no'} bf16 arithmetic), {m.get('threads', '?')} threads, "
            f"torch {m.get('torch', '?')}, {m.get('date', '?')}")
    window = [calls[c]["window_peaks"] for c in order if calls[c].get("window_peaks")]
    if window:  # each call against the peaks measured in its own process, right after its timed calls
        peak = ("peaks measured beside each call: " + ", ".join(
            f"{fmt(w['fp32_flops'] / 1e9)} GFLOP/s / {fmt(w['copy_bytes_per_s'] / 1e9)} GB/s" for w in window)
            + f" (at the start, alone in their process: {fmt(peaks.get('fp32_flops', 0) / 1e9)} GFLOP/s, "
              f"{fmt(peaks.get('copy_bytes_per_s', 0) / 1e9)} GB/s)")
    else:
        peak = (f"measured peaks there: {fmt(peaks['fp32_flops'] / 1e9)} GFLOP/s float32, "
                f"{fmt(peaks['copy_bytes_per_s'] / 1e9)} GB/s copy" if peaks.get("fp32_flops") and
                peaks.get("copy_bytes_per_s") else "peaks not measured")
    notes = doc.get("notes", "").splitlines()[:1]
    return text + f"\n\n{what}; {peak}. " + " ".join(n.rstrip(".") + "." for n in notes)


def t_neighbours(results) -> str:
    """The training step beside busy processes (``bench.neighbours``): per number of neighbours,
    each setting's min time, its slow-down against itself alone, its speed-up over gomp's
    default beside the same neighbours, and the neighbours' own progress."""
    doc = load("neighbours", results)
    if doc is None:
        return "*(no neighbours.json yet: `python -m bench.neighbours`)*"
    rows = doc["rows"]
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    labels = {r["setting"]: r["label"] for r in rows}
    out = []
    for n in sorted({r["neighbours"] for r in rows}):
        cells = [str(n)]
        for setting in settings:
            r = next((r for r in rows if r["neighbours"] == n and r["setting"] == setting), None)
            if r is None or "min_ms" not in r:
                cells.append("error: " + r["error"][:60] if r else "")
                continue
            extra = [f"{r['x_vs_alone']:.2f}× alone" if n and r.get("x_vs_alone") else "",
                     f"{times(r['speedup_vs_spin'])} vs default" if setting != "spin" and r.get("speedup_vs_spin")
                     else "",
                     f"neighbours {fmt(r['neighbour_Mloops_per_s'])} M loops/s" if r.get("neighbour_Mloops_per_s")
                     else ""]
            cells.append(f"{ms(r['min_ms'])} (median {ms(r['median_ms'])})"
                         + "".join(f"; {e}" for e in extra if e)
                         + f"; load {r.get('load_before', 0):.1f}/{r.get('load_after', 0):.1f}")
        out.append(cells)
    text = table(["busy neighbours"] + [labels[s] for s in settings], out, "l" + "l" * len(settings))
    m = doc.get("machine", {})
    return (text + f"\n\n{m.get('processor', '?')}, {m.get('torch', '?')}, {m.get('date', '?')}. "
            + " ".join(n.rstrip(".") + "." for n in doc.get("notes", "").splitlines()))


TABLES = {
    "neighbours": t_neighbours,
    "breakdown": t_breakdown,
    "breakdown-before": lambda results: t_breakdown(results, "breakdown_before"),
    "peaks": t_peaks,
    "train-headline": t_train_headline,
    "train-step": t_train_step,
    "train-step-fp32-recheck": lambda results: t_train_step(results, "train_step_fp32_recheck"),
    "train-step-busy": lambda results: t_train_step(results, "train_step_busy"),
    "model-speed": t_model_speed,
    "export": t_export,
    "ops-quick": t_ops_quick,
    "ops-layouts": t_ops_layouts,
    "ops-instances": t_ops_instances,
    "params-flops": t_params_flops,
}


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


def render(text: str, results: Path | None = None) -> str:
    """``text`` with every ``bench:table`` block replaced by its table from the JSON."""
    def sub(m):
        name = m.group("name")
        if name not in TABLES:
            raise KeyError(f"unknown bench table {name!r} (known: {', '.join(TABLES)})")
        return m.group(1) + TABLES[name](results).rstrip("\n") + "\n" + m.group(4)

    return BLOCK.sub(sub, text)


def stale(paths=DOCS, results: Path | None = None) -> list[str]:
    """The files whose tables differ from the JSON (``file: table``)."""
    out = []
    for path in paths:
        text = Path(path).read_text()
        fresh = render(text, results)
        if fresh != text:
            old = {m.group("name"): m.group("body") for m in BLOCK.finditer(text)}
            new = {m.group("name"): m.group("body") for m in BLOCK.finditer(fresh)}
            out += [f"{path}: {name}" for name in old if old[name] != new.get(name)]
    return out


# ---------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------


def _pixels(shape: str) -> int | None:
    m = re.search(r"(\d+)x(\d+)", shape)
    return int(m.group(1)) * int(m.group(2)) if m else None


def plot_all(results: Path | None = None, device: str = DEVICE) -> list[Path]:
    """The PNGs: op time against L and against resolution, the training iteration and the
    generator (time and memory, ours against the public code), fractions of the measured peaks."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    results = results or RESULTS
    out_dir = results / device / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    styles = {"cpp": ("ours (C++)", "C0"), "official-style": ("official-style", "C3"),
              "reference": ("reference", "C7"), "compile(reference)": ("compile(reference)", "C2")}

    def save(fig, name):
        path = out_dir / name
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, op in zip(axes, OPS):
        doc = load(f"{op}_instances", results, device)
        if doc is None:
            continue
        for backend, (label, color) in styles.items():
            rs = sorted((r for r in doc["rows"] if r["backend"] == backend and r["layout"] == "block"),
                        key=lambda r: r["L"])
            if rs:
                ax.plot([r["L"] for r in rs], [r["fwd_bwd_ms"] for r in rs], "o-", label=label, color=color)
        ax.set(xscale="log", yscale="log", xlabel="instances L", ylabel="forward+backward, ms",
               title=f"{op}\n{re.sub(r'-L[0-9]+$', '', doc['rows'][0]['shape'])}, 8×8 blocks", )
        ax.legend(fontsize=8)
    save(fig, "ops_vs_instances.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, op, prefix in zip(axes, ("instance_modulation", "instance_conv2d"), ("city-", "enc-")):
        doc = load(op, results, device)
        if doc is None:
            continue
        for backend, (label, color) in styles.items():
            rs = sorted((r for r in doc["rows"] if r["backend"] == backend and r["shape"].startswith(prefix)
                         and r.get("fwd_bwd_ms")), key=lambda r: _pixels(r["shape"]))
            if rs:
                ax.plot([_pixels(r["shape"]) for r in rs], [r["fwd_bwd_ms"] for r in rs], "o", label=label, color=color)
        ax.set(xscale="log", yscale="log", xlabel="pixels per map (H·W)", ylabel="forward+backward, ms",
               title=f"{op}: the model's own layers\n({'Cityscapes generator' if prefix == 'city-' else 'encoder'}, C varies)")
        ax.legend(fontsize=8)
    save(fig, "ops_vs_resolution.png")

    rows, _ = _train_rows(results)
    rows = [r for r in rows if "error" not in r and "skipped" not in r]
    if rows:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8))
        labels = sorted({(r["precision"], r["batch"]) for r in rows}, key=lambda k: (k[0] != "fp32", k[1]))
        x = range(len(labels))
        for i, (side, color) in enumerate((("ours", "C0"), ("public code", "C3"))):
            by = {(r["precision"], r["batch"]): r for r in rows if r["path"] == side}
            xs = [j + (i - 0.5) * 0.38 for j in x]
            a1.bar(xs, [by[k]["images_per_s"] if k in by else 0 for k in labels], 0.38, label=side, color=color)
            a2.bar(xs, [by[k]["peak_MB"] if k in by else 0 for k in labels], 0.38, label=side, color=color)
        for ax, what in ((a1, "images/s (min time)"), (a2, "peak memory, MB")):
            ax.set_xticks(list(x), [f"{p}\nB{b}" for p, b in labels])
            ax.set(ylabel=what, title=f"training iteration (G step + D step): {what}")
            ax.legend(fontsize=8)
        save(fig, "train_step.png")

    docs = [(label, load(name, results, device)) for label, name in (("before", "breakdown_before"),
                                                                        ("after", "breakdown"))]
    docs = [(label, doc) for label, doc in docs if doc is not None]
    if len(docs) == 1:
        docs = [("profiled call", docs[0][1])]
    if docs:
        calls = [c for c in BREAKDOWN_CALLS if any((c, "dense") in {(r["call"], r["group"]) for r in d["rows"]}
                                                   for _, d in docs)]
        fig, axes = plt.subplots(1, len(calls), figsize=(4.6 * len(calls), 3.6), squeeze=False)
        colors = dict(zip(BREAKDOWN_GROUPS, ("C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7")))
        for ax, call in zip(axes[0], calls):
            for i, (label, doc) in enumerate(docs):
                left = 0.0
                for group in BREAKDOWN_GROUPS:
                    r = next((r for r in doc["rows"] if r["call"] == call and r["group"] == group), None)
                    if r is None:
                        continue
                    ax.barh(i, r["ms"], left=left, color=colors[group],
                            label=BREAKDOWN_GROUPS[group] if i == 0 else None)
                    left += r["ms"]
            ax.set_yticks(range(len(docs)), [label for label, _ in docs])
            ax.set(xlabel="ms (one profiled call)", title=call)
        axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        save(fig, "breakdown.png")

    peaks = best_peaks(results)
    bars = []
    for op, doc in op_docs("quick", results, device):
        r = next((r for r in doc["rows"] if r["backend"] == "cpp"), None)
        if r is not None:
            _, frac, which = op_fraction(r, peaks)
            if frac is not None:
                bars.append((f"{op}\n({'FLOPs / dense' if 'dense' in which else 'bytes floor / copy'} peak)", frac, "C0"))
    for r in rows:
        if flop_fraction(r, peaks) and r["batch"] == 1:
            bars.append((f"train iter. {r['path']}\n{r['precision']} B1 (FLOPs / dense peak)", flop_fraction(r, peaks),
                         "C0" if r["path"] == "ours" else "C3"))
    for r in (load("model_speed", results, device) or {}).get("rows", []):
        if flop_fraction(r, peaks) and r["call"] == "G inference":
            bars.append((f"G inference {r['path']}\n{r['precision']} (FLOPs / dense peak)", flop_fraction(r, peaks),
                         "C0" if r["path"] == "ours" else "C3"))
    if bars:
        fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(bars)), 4))
        ax.bar(range(len(bars)), [b[1] * 100 for b in bars], color=[b[2] for b in bars])
        ax.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=7)
        ax.axhline(100, color="k", lw=0.8)
        ax.set(ylabel="% of the machine's measured peak", title="How close to the limit (peaks measured by the benchmark)")
        save(fig, "roofline.png")
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only compare; exit 1 when a table is stale")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    if args.check:
        bad = stale()
        for b in bad:
            print(f"stale: {b}", file=sys.stderr)
        if bad:
            print("error: tables differ from bench/results: run python -m bench.report", file=sys.stderr)
        return 1 if bad else 0
    from inade.utils.files import write_text_atomic  # noqa: PLC0415

    for path in DOCS:
        if path.is_file():
            text = path.read_text()
            fresh = render(text)
            if fresh != text:
                write_text_atomic(path, fresh)
                print(f"updated {path.relative_to(ROOT)}")
    if not args.no_plots:
        try:
            import matplotlib  # noqa: F401, PLC0415
        except ImportError:
            print("note: matplotlib is not installed (pip install -e .[bench]): no plots written")
            return 0
        for path in plot_all():
            print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
