"""Where the time goes: ``python -m bench.breakdown`` profiles one generator inference, one
generator forward+backward and one full training iteration (CelebAMask-HQ 256², batch 1,
float32) and sorts every operator's time into what it is:

* ``dense``: convolutions and matrix products (oneDNN / BLAS; with ``im2col``/``col2im``, the
  patch copies of the GEMM convolutions, as oneDNN's own reorders count in its convolution) —
  compute-bound;
* ``instance_modulation``, ``instance_avg_pool``, ``instance_conv2d``: our three ops (each
  ``inade::`` custom op with everything it calls);
* ``elementwise``: the other arithmetic passes (activations, additions, upsampling — the copy of
  a ``[B, C, H, 2, W, 2]`` broadcast view —, losses, reductions, Adam's ``_foreach`` updates);
* ``layout``: the other copies (``copy_``, ``clone``, ``contiguous``, ``to``: memory-format and
  dtype conversions);
* ``allocation``: ``empty``/``zeros``/``fill_`` and friends (fresh memory, zero-filled);
* ``other``: dispatch, views, autograd bookkeeping, Python, and the profiled wall time no
  operator accounts for.

Each call runs in its own process (:func:`bench.common.isolated`): ``--warmup`` untimed
calls, ``--calls`` timed ones (min, median, spread: the roofline fraction of the whole call is
its FLOPs — :mod:`inade.flops` — over its min time and the machine's float32 peak), then
``--profiled`` calls under ``torch.profiler`` (operators' self CPU time; ``inade::`` ops
inclusive), of which the fastest is kept (a shared machine's busy spell only adds time). Every
group is set against its floor: compute groups (dense, ``instance_conv2d``) as FLOPs over the
measured FLOP peak, memory groups (modulation, pooling, elementwise, layout) as a bytes floor —
each input read once and an output of the largest input's size written once, 4 bytes an
element, from the profiler's recorded shapes — over the measured copy peak. The peaks are
measured in the call's own process right after its timed calls (float32 ``torch.mm`` 2048², a
3×3 convolution, a 256 MB copy, each the best of 5; run between the timed calls they slowed
the call that followed): on a shared machine the share of the cores a process gets moves
with the load, and a call is set against the peak of the same spell (the peaks measured at the start, in their own process, are
kept beside them). The same fraction in CPU time — the call's FLOPs per CPU second of the
process (all threads) over the peak kernels' FLOPs per CPU second — does not move with the
share of the cores a process gets; it counts no time a thread spends asleep waiting for the
other (``OMP_WAIT_POLICY=PASSIVE``), so it reads high where a call runs serial sections.

Writes ``bench/results/<device>/<name>.json`` (``--name``, default ``breakdown``);
``python -m bench.report`` turns it into the table of docs/PERFORMANCE.md and a stacked bar.

    python -m bench.breakdown                        # the headline: ngf 64, 256x256
    python -m bench.breakdown --ngf 16 --size 64 --calls 2 --no-write   # a quick look
"""
from __future__ import annotations

import os
import re
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as every benchmark here (before torch loads OpenMP)

import torch  # noqa: E402

from bench import common  # noqa: E402

CALLS = ("G inference", "G fwd+bwd", "train iteration")
GROUPS = ("dense", "instance_modulation", "instance_avg_pool", "instance_conv2d", "elementwise", "layout",
          "allocation", "other")
COMPUTE = ("dense", "instance_conv2d")
MEMORY = ("instance_modulation", "instance_avg_pool", "elementwise", "layout")

_DENSE = re.compile(r"conv|(^|_)(mm|addmm|bmm|baddbmm|matmul|linear|im2col|col2im)(_|$)")
_LAYOUT = {"copy_", "clone", "contiguous", "_to_copy", "to", "_copy_from", "_copy_from_and_resize", "to_dense",
           "to_mkldnn"}
_ALLOC = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "zeros", "zeros_like", "new_zeros",
          "ones", "ones_like", "full", "full_like", "new_full", "zero_", "fill_", "resize_", "scalar_tensor"}
_VIEWS = {"view", "as_strided", "t", "transpose", "permute", "expand", "expand_as", "unsqueeze", "squeeze", "select",
          "slice", "narrow", "alias", "detach", "detach_", "_unsafe_view", "unbind", "split", "split_with_sizes",
          "chunk", "_reshape_alias", "reshape", "flatten", "view_as", "unflatten", "lift_fresh", "requires_grad_",
          "is_nonzero", "item", "_local_scalar_dense", "result_type", "numpy_T", "set_", "stride", "size",
          "resolve_conj", "resolve_neg", "_has_compatible_shallow_copy_type", "is_same_size", "contiguous_view"}


def group_of(name: str, shapes=()) -> str:
    """The group of a profiler event (an ``inade::`` op's own group, else by the aten name;
    ``shapes``, the recorded input shapes, tell upsampling's broadcast copy from a layout change)."""
    if name.startswith("inade::"):
        for op in ("instance_modulation", "instance_avg_pool", "instance_conv2d"):
            if name[len("inade::"):].startswith(op):
                return op
        return "other"  # instance_classes, instance_parts: the model's tables and input checks
    if not name.startswith("aten::"):
        return "other"  # autograd nodes, optimizer and profiler records, Python
    op = name[len("aten::"):]
    if op in _VIEWS:
        return "other"
    if op in _LAYOUT:
        six_d = any(isinstance(s, (list, tuple)) and len(s) == 6 for s in shapes or ())
        return "elementwise" if six_d else "layout"
    if op in _ALLOC:
        return "allocation"
    if _DENSE.search(op):
        return "dense"
    return "elementwise"


def floor_bytes(shapes) -> int:
    """Bytes of one pass over an op's tensors: each input read once and an output as large as its
    largest input written once, 4 bytes an element (``shapes``: the profiler's input shapes)."""
    sizes = [_numel(s) for s in shapes if isinstance(s, (list, tuple)) and s and all(isinstance(d, int) for d in s)]
    return 4 * (sum(sizes) + max(sizes, default=0))


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def attribute(events, wall_us: float) -> dict:
    """``{group: {"us", "bytes", "events"}}`` of profiler ``events`` (``prof.events()``):
    an ``inade::`` op counts whole (children included) in its group; every other event
    counts its own time only; what no event accounts for of ``wall_us`` goes to ``other``."""
    out = {g: {"us": 0.0, "bytes": 0, "events": 0} for g in GROUPS}

    def inside_ours(e) -> bool:
        p = e.cpu_parent
        while p is not None:
            if p.name.startswith("inade::"):
                return True
            p = p.cpu_parent
        return False

    counted = 0.0
    for e in events:
        if inside_ours(e):
            continue
        group = group_of(e.name, getattr(e, "input_shapes", None) or ())
        us = e.cpu_time_total if e.name.startswith("inade::") else e.self_cpu_time_total
        out[group]["us"] += us
        out[group]["events"] += 1
        counted += us
        if group in MEMORY:
            out[group]["bytes"] += floor_bytes(getattr(e, "input_shapes", None) or [])
    out["other"]["us"] += max(0.0, wall_us - counted)
    return out


# ---------------------------------------------------------------------------
# The calls (ours only), built as the model benchmarks build them
# ---------------------------------------------------------------------------


def build_call(spec: dict):
    """``(setup or None, fn)`` of ``spec["call"]`` on the bench's fixed face batch."""
    from bench import bench_model_speed, bench_train_step  # noqa: PLC0415

    if spec["call"] == "train iteration":
        cfg = bench_train_step.model_config(spec)
        step, _ = bench_train_step.ours_step({**spec, "batch": 1, "precision": "fp32"}, cfg, None)
        return None, step
    calls = bench_model_speed._paths({**spec, "official_code": None}, ("ours",))["ours"]
    return calls[{"G inference": "G inference fp32", "G fwd+bwd": "G train fwd+bwd"}[spec["call"]]]


def worker(spec: dict) -> dict:
    """One process: ``peaks``, or one call timed (``--calls``), counted (FLOPs) and profiled."""
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    if spec["what"] == "peaks":
        return {"peaks": common.measure_peaks(device), "machine": machine(device)}
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    from inade import flops  # noqa: PLC0415

    setup, fn = build_call(spec)
    window, window_cpu, cpu_s = {}, {}, []  # the peaks of this process's spell; CPU seconds of each call

    def call_with_cpu_time():
        t0 = time.process_time()
        fn()
        cpu_s.append(time.process_time() - t0)

    seconds = common.time_calls(call_with_cpu_time, warmup=spec["warmup"], calls=spec["calls"], setup=setup,
                                sync=lambda: common.sync(device))
    cpu_s = cpu_s[spec["warmup"]:]
    # Right after the timed calls (run between them, they slowed the calls that followed), in this
    # process: on a shared machine a process's share of the cores moves with the load.
    kernels = common.peak_kernels(device, bf16=False)
    for _ in range(5):
        for name, (kfn, work) in kernels.items():
            kfn()
            t0 = time.process_time()
            rate = work / common.wall_seconds(kfn)
            window[name] = max(window.get(name, 0.0), rate)
            window_cpu[name] = max(window_cpu.get(name, 0.0), work / max(time.process_time() - t0, 1e-9))
    del kernels
    window_peaks = {"fp32_flops": max(window["mm_fp32"], window["conv_fp32"]), "copy_bytes_per_s": window["copy"],
                    "mm_fp32_flops": window["mm_fp32"], "conv_fp32_flops": window["conv_fp32"],
                    "fp32_flops_per_cpu_s": max(window_cpu["mm_fp32"], window_cpu["conv_fp32"])}
    if setup:
        setup()
    counted = flops.count(fn)
    by_op = counted["by_op"]
    op_flops = {op: sum(n for k, n in by_op.items() if k.startswith(f"inade.{op}"))
                for op in ("instance_modulation", "instance_avg_pool", "instance_conv2d")}
    if setup:
        setup()
    fn()  # once more after the counter (its dispatch mode leaves nothing behind, but the caches are warm)
    if setup:
        setup()
    best = None
    for _ in range(spec.get("profiled", 1)):
        if setup:
            setup()
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            wall = common.wall_seconds(fn)
        if best is None or wall < best[0]:
            best = (wall, attribute(prof.events(), wall * 1e6))
    wall, groups = best
    return {**common.sample_stats(seconds), "profiled_ms": wall * 1e3, "window_peaks": window_peaks,
            "min_cpu_s": min(cpu_s),
            "flops": float(counted["conv_linear"] + counted["inade_ops"]),
            "dense_flops": float(counted["conv_linear"]), "op_flops": op_flops,
            "groups": {g: {"ms": v["us"] / 1e3, "bytes": v["bytes"], "events": v["events"]} for g, v in groups.items()}}


def machine(device: torch.device) -> dict:
    """:func:`common.machine_info` with the CPU's model name and vector unit, and its bf16 answer."""
    from inade.utils.cpu import cpu_capability, cpu_has_bf16  # noqa: PLC0415

    info = common.machine_info(device)
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    return {**info, "cpu_model": model, "cpu_capability": cpu_capability(), "cpu_bf16": cpu_has_bf16()}


def rows_of(call: str, result: dict, peaks: dict) -> list[dict]:
    """One row per group of ``call``: ms, share of the profiled call, its floor and the fraction."""
    rows = []
    total = result["profiled_ms"]
    for g in GROUPS:
        v = result["groups"][g]
        row = {"call": call, "group": g, "ms": v["ms"], "share": v["ms"] / total if total else None,
               "events": v["events"]}
        if g in COMPUTE:
            work = result["dense_flops"] if g == "dense" else result["op_flops"]["instance_conv2d"]
            row.update(kind="compute", flops=work,
                       fraction=common.fraction_of_peak(work, v["ms"] / 1e3, peaks.get("fp32_flops")) if work else None)
        elif g in MEMORY:
            row.update(kind="memory", bytes=v["bytes"],
                       fraction=common.fraction_of_peak(v["bytes"], v["ms"] / 1e3, peaks.get("copy_bytes_per_s"))
                       if v["bytes"] else None)
        else:
            row["kind"] = "overhead"
        rows.append(row)
    return rows


def load_text(calls: list[dict]) -> str:
    loads = [c[k] for c in calls for k in ("load_before", "load_after") if c.get(k) is not None]
    return f"{min(loads):.1f}–{max(loads):.1f} before/after the calls" if loads else "not recorded"


@common.interruptible
def main(argv=None) -> int:
    if common.worker_main(worker, argv):
        return 0
    p = common.model_parser(__doc__.split("\n\n")[0], size_help="crop_size (square)", calls=5)
    p.add_argument("--only", nargs="+", choices=CALLS, default=list(CALLS), metavar="CALL")
    p.add_argument("--profiled", type=int, default=2, help="profiled calls per path (the fastest is kept)")
    p.add_argument("--name", default="breakdown", help="results file name (bench/results/<device>/<name>.json)")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    if args.official_code:
        raise SystemExit("error: --official-code: the breakdown profiles ours only (bench_model_speed and "
                         "bench_train_step compare)")
    if args.calls < 1 or args.warmup < 0 or args.profiled < 1:
        raise SystemExit("error: --calls and --profiled must be at least 1 and --warmup at least 0")
    device = common.default_device()
    base = common.model_spec(args, device)
    module = "bench.breakdown"
    measured = common.isolated(module, {**base, "what": "peaks"})
    peaks, info = measured.get("peaks", {}), measured.get("machine", {})
    calls, rows = [], []
    for call in common.progress(args.only, desc="breakdown", unit="call"):
        r = common.isolated(module, {**base, "what": "call", "call": call, "warmup": args.warmup, "calls": args.calls,
                                     "profiled": args.profiled})
        if "error" in r:
            print(f"  {call}: {r['error']}", flush=True)
            calls.append({"call": call, "error": r["error"], "load_before": r.get("load_before")})
            continue
        summary = {k: r[k] for k in ("n", "min_ms", "median_ms", "max_ms", "spread", "profiled_ms", "flops",
                                     "dense_flops", "op_flops", "load_before", "load_after", "window_peaks",
                                     "min_cpu_s")}
        own = r["window_peaks"]
        summary.update(call=call, flop_fraction=common.fraction_of_peak(r["flops"], r["min_ms"] / 1e3,
                                                                        own["fp32_flops"]),
                       flop_fraction_vs_start_peak=common.fraction_of_peak(r["flops"], r["min_ms"] / 1e3,
                                                                           peaks.get("fp32_flops")),
                       # load-independent: the call's FLOPs per CPU second over the peak kernels' (all threads)
                       cpu_flop_fraction=common.fraction_of_peak(r["flops"], r["min_cpu_s"],
                                                                 own["fp32_flops_per_cpu_s"]))
        calls.append(summary)
        rows += rows_of(call, r, own)
        print(f"  {call}: min {r['min_ms']:.0f} ms, median {r['median_ms']:.0f} ms, spread {r['spread']:.0%}, "
              f"{summary['flop_fraction'] or 0:.0%} of the fp32 peak ({summary['cpu_flop_fraction'] or 0:.0%} in CPU "
              f"time); profiled {r['profiled_ms']:.0f} ms: "
              + ", ".join(f"{g} {r['groups'][g]['ms']:.0f}" for g in GROUPS), flush=True)
    notes = [f"CelebAMask-HQ config, ngf {args.ngf}, {args.size}x{args.size}, batch 1, {args.instances} instances, "
             f"float32, {args.threads} threads; each call its own process: {args.warmup} warm-up + {args.calls} "
             f"timed calls, then the fastest of {args.profiled} profiled calls (torch.profiler, operators' self time; inade:: "
             f"ops inclusive); 1-min load average {load_text(calls)}; "
             f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}",
             peaks.get("method", "peaks not measured: " + measured.get("error", "?"))]
    if peaks.get("bf16_skipped"):
        notes.append(peaks["bf16_skipped"])
    print(common.markdown_table(rows, ["call", "group", "ms", "share", "kind", "fraction", "events"]))
    if args.no_write:
        return 0
    path = common.write_results(args.name, rows, device, notes="\n".join(notes), peaks=peaks, calls=calls,
                                cpu=info)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
