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
γ and β) with one index map: our backends take the four maps in one call, the
official-style path loops over instances once per map, as the public code does.

    python -m bench.bench_instance_avg_pool            # all shapes
    python -m bench.bench_instance_avg_pool --quick    # the (B4, C256, 128x128, L32) shape only

On a CPU shared with other busy processes, run with ``OMP_WAIT_POLICY=passive``:
with OpenMP's default spin-waiting, every parallel region (each torch op of the
official-style loop, each of ours) can stall for whole scheduler ticks (4 ms
here) while spinning threads and the other processes fight for the cores.
"""
from __future__ import annotations

import os

import torch

from bench import common, official_style
from inade.ops import instance_avg_pool, reference, use_backend

# (name, number of maps, B, C, H, W, L)
SHAPES = [
    ("B4-C256-128x128-L32", 1, 4, 256, 128, 128, 32),
    # Encoder heads at 256x256 input, ngf 64: four [4, noise_nc=64, 256, 256] maps.
    ("encoder-4x(B4-C64-256x256)-L32", 4, 4, 64, 256, 256, 32),
    # The shape at which the public code pooled in 49 ms (fwd+bwd) on this kind of 2-core CPU.
    ("B2-C64-128x256-L20", 1, 2, 64, 128, 256, 20),
]


def make_case(maps, B, C, H, W, L, dtype, device, seed=0):
    """``(xs, inst, dys)``: ``maps`` feature maps, an index map of 8x8-pixel blocks with
    random ids (runs of equal ids, like real instance maps), and table gradients."""
    g = torch.Generator().manual_seed(seed)
    xs = tuple(torch.randn(B, C, H, W, generator=g).to(device, dtype) for _ in range(maps))
    coarse = torch.randint(0, L, (B, max(1, H // 8), max(1, W // 8)), generator=g)
    inst = torch.nn.functional.interpolate(coarse[:, None].float(), (H, W), mode="nearest")[:, 0].long().to(device)
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


def candidates(device):
    """name -> function(xs, inst, L) returning a tuple of pooled tables."""

    def with_backend(name):
        def f(xs, inst, L):
            with use_backend(name):
                return instance_avg_pool(xs, inst, L)

        return f

    def official(xs, inst, L):
        return official_style.avg_pool_loop(xs, inst, L)

    def plain_reference(xs, inst, L):
        return reference.instance_avg_pool(xs, inst, L)

    out = {"official-style": official, "reference": plain_reference}
    if (fn := common.compiled(plain_reference)) is not None:
        out["compile(reference)"] = fn
    out[common.fused_backend(device)] = with_backend(common.fused_backend(device))
    return out


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


def run(shapes, dtypes, device, min_run_time):
    rows = []
    peak = common.peak_bandwidth(device)
    for name, maps, B, C, H, W, L in shapes:
        for dtype in dtypes:
            case = make_case(maps, B, C, H, W, L, dtype, device)
            results = {cand: measure(fn, case, device, min_run_time) for cand, fn in candidates(device).items()}
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


def main(argv=None):
    args = common.argument_parser(__doc__).parse_args(argv)
    device = common.default_device()
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
            notes += "; 1/5/15-min load average after the run: %.1f %.1f %.1f (shared machine)" % os.getloadavg()
            notes += f"; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"
        print("wrote", common.write_results("instance_avg_pool" + ("_quick" if args.quick else ""), rows, device, notes))


if __name__ == "__main__":
    main()
