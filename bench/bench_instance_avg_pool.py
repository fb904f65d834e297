"""Benchmark of instance_avg_pool (paper Eq. 4).

Per shape and backend: forward and forward+backward median time, the bytes the op
must move at minimum (forward: read every map and the index map, write the pooled
tables; backward: read the table gradients and the index map, write every dx),
the achieved GB/s against that floor (and % of peak bandwidth on GPU), peak extra
memory of forward+backward, and speed-ups against the official-style path (a
Python loop over instances on a one-hot map, ``bench/official_style.py``) and
against ``torch.compile(reference)``. The op is memory-bound (one add per element),
so no FLOP rate is reported.

The encoder case pools its four heads ``[B, noise_nc, H, W]`` (μ and log σ² for
γ and β) with one index map: our backends pool them concatenated along C in one
call (the concatenation is timed), the official-style path loops over instances
once per map, as the public code does.

    python -m bench.bench_instance_avg_pool            # all shapes
    python -m bench.bench_instance_avg_pool --quick    # the (B4, C256, 128x128, L32) shape only
    python -m bench.bench_instance_avg_pool --layouts block,random,own   # headline shape per id layout
    python -m bench.bench_instance_avg_pool --sweep-instances            # headline shape, L = 1 .. 256

On a CPU shared with other busy processes, run with ``OMP_WAIT_POLICY=passive``:
with OpenMP's default spin-waiting, every parallel region (each torch op of the
official-style loop, each of ours) can stall for whole scheduler ticks (4 ms
here) while spinning threads and the other processes fight for the cores.
"""
from __future__ import annotations

import sys

import torch

from bench import common, official_style
from inade.ops import instance_avg_pool, reference

# (name, number of maps, B, C, H, W, L)
SHAPES = [
    ("B4-C256-128x128-L32", 1, 4, 256, 128, 128, 32),
    # Encoder heads at 256x256 input, ngf 64: four [4, noise_nc=64, 256, 256] maps.
    ("encoder-4x(B4-C64-256x256)-L32", 4, 4, 64, 256, 256, 32),
    # The shape at which the public code pooled in 49 ms (fwd+bwd) on this kind of 2-core CPU.
    ("B2-C64-128x256-L20", 1, 2, 64, 128, 256, 20),
]


def make_case(maps, B, C, H, W, L, dtype, device, seed=0, layout="block"):
    """``(xs, inst, dys)``: ``maps`` feature maps, an index map of ``layout``
    (:func:`bench.common.index_map`; by default 8x8-pixel blocks with random ids: runs
    of equal ids, like real instance maps), and table gradients."""
    g = torch.Generator().manual_seed(seed)
    xs = tuple(torch.randn(B, C, H, W, generator=g).to(device, dtype) for _ in range(maps))
    inst = common.index_map(B, H, W, L, layout, g).to(device)
    dys = tuple(torch.randn(B, L, C, generator=g).to(device, dtype) for _ in range(maps))
    return xs, inst, dys


def floor_bytes(xs, inst, dys, backward: bool) -> int:
    """Bytes the op must move at minimum: every input read once, every output written once."""
    fmaps = sum(x.numel() * x.element_size() for x in xs)
    tables = sum(d.numel() * d.element_size() for d in dys)
    ids = inst.numel() * inst.element_size()
    total = fmaps + ids + tables
    if backward:
        total += tables + ids + fmaps  # read the table gradients and ids, write dx
    return total


def one_call(pool):
    """``pool(x, inst, L)`` of one map as a function of several maps: they are pooled
    concatenated along C and the table split again, as the encoder does."""

    def f(xs, inst, L):
        x = xs[0] if len(xs) == 1 else torch.cat(xs, 1)
        return pool(x, inst, L).split(xs[0].shape[1], dim=2)

    return f


def candidates(device):
    """name -> function(xs, inst, L) returning a tuple of pooled tables."""

    def official(xs, inst, L):
        return official_style.avg_pool_loop(xs, inst, L)

    return common.candidates(device, one_call(instance_avg_pool), official, one_call(reference.instance_avg_pool))


def measure(fn, case, device, min_run_time):
    xs, inst, dys = case
    L = dys[0].shape[1]
    leaves = [x.detach().clone().requires_grad_() for x in xs]

    def forward():
        with torch.no_grad():
            return fn(xs, inst, L)

    def forward_backward():
        outs = fn(tuple(leaves), inst, L)
        for t in leaves:
            t.grad = None
        torch.autograd.backward(outs, dys)

    return common.time_forward_and_backward(forward, forward_backward, device, min_run_time)


def run(shapes, dtypes, device, min_run_time, layout="block", backends=None):
    """Rows of every backend (or of ``backends``) at each shape and dtype, index maps of ``layout``."""
    rows = []
    peak = common.peak_bandwidth(device)
    for name, maps, B, C, H, W, L in common.progress(shapes, desc="instance_avg_pool", unit="shape"):
        for dtype in dtypes:
            case = make_case(maps, B, C, H, W, L, dtype, device, layout=layout)
            results = {cand: measure(fn, case, device, min_run_time) for cand, fn in candidates(device).items()
                       if backends is None or cand in backends}
            bases = {key: results.get(cand, {}).get(metric) for key, cand, metric in (
                ("x_vs_official", "official-style", "fwd_bwd_ms"), ("fwd_x_vs_official", "official-style", "fwd_ms"),
                ("x_vs_compile", "compile(reference)", "fwd_bwd_ms"), ("x_vs_reference", "reference", "fwd_bwd_ms"))}
            for cand, r in results.items():
                row = {"op": "instance_avg_pool", "shape": name, "maps": maps, "dtype": str(dtype).replace("torch.", ""),
                       "backend": cand, **r}
                if "fwd_bwd_ms" in r:
                    gbs = floor_bytes(*case, True) / (r["fwd_bwd_ms"] * 1e-3) / 1e9
                    row["fwd_bwd_GBps"] = gbs
                    row["fwd_GBps"] = floor_bytes(*case, False) / (r["fwd_ms"] * 1e-3) / 1e9
                    if peak:
                        row["fwd_bwd_pct_peak_bw"] = 100 * gbs * 1e9 / peak
                    for key, base in bases.items():
                        if base:
                            row[key] = base / r["fwd_ms" if key.startswith("fwd_") else "fwd_bwd_ms"]
                rows.append(row)
    return rows


@common.interruptible
def main(argv=None):
    args, device = common.parse(__doc__, argv)
    if args.layouts or args.sweep_instances:
        # The L sweep on the smaller map: the official-style loop at L = 256 is 256 passes over it.
        _, maps, B, C, H, W, L = SHAPES[2] if args.sweep_instances else SHAPES[0]

        def run_one(n, layout, backends):
            return run([(f"B{B}-C{C}-{H}x{W}-L{n}", maps, B, C, H, W, n)], [torch.float32], device,
                       args.min_run_time, layout, backends)

        # own (L = H*W): the official-style loop over instances would take minutes, so it is left out.
        return common.run_layout_tables(
            args, device, "instance_avg_pool", run_one, num_instances=L, pixels=H * W,
            layout_backends=lambda lay: ("reference", common.fused_backend(device)) if lay == "own"
            else ("official-style", "reference", common.fused_backend(device)),
            sweep_backends=("official-style", common.fused_backend(device)),
            columns=["fwd_ms", "fwd_bwd_ms", "fwd_bwd_GBps", "x_vs_official", "x_vs_reference"],
            notes="forward+backward = torch.autograd.backward(outputs, table gradients)")
    shapes = SHAPES[:1] if args.quick else SHAPES
    dtypes = [torch.float32] if args.quick or device.type == "cpu" else [torch.float32, torch.bfloat16]
    rows = run(shapes, dtypes, device, args.min_run_time)
    columns = ["shape", "dtype", "backend", "fwd_ms", "fwd_bwd_ms", "fwd_GBps", "fwd_bwd_GBps", "fwd_bwd_pct_peak_bw",
               "peak_extra_MB", "x_vs_official", "fwd_x_vs_official", "x_vs_compile", "x_vs_reference", "error"]
    print(common.markdown_table(rows, columns))
    if not args.no_write:
        notes = ("forward+backward = torch.autograd.backward(outputs, table gradients); GB/s against the floor bytes "
                 "(each input read once, each output written once); x_vs_* are forward+backward speed-ups, "
                 "fwd_x_vs_official the forward one; index maps of 8x8-pixel blocks with random ids; "
                 "official-style = Python loop over instances on a one-hot map (one loop per map)")
        if device.type == "cpu":
            notes += "; " + common.load_note()
        print("wrote", common.write_results("instance_avg_pool" + ("_quick" if args.quick else ""), rows, device, notes))


if __name__ == "__main__":
    sys.exit(main())
