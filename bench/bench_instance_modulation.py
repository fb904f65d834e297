"""Benchmark of instance_modulation (paper Eq. 1–2 with batch norm), training mode.

Per shape and backend: forward and forward+backward median time, the bytes the op
must move at minimum (read x, inst and the tables, write y; in backward read dy,
write dx and the table gradients: each tensor once), the achieved GB/s against
that floor (and % of peak bandwidth on GPU), peak extra memory, and speed-ups
against the official-style path (one-hot maps + einsum, ``bench/official_style.py``)
and against ``torch.compile(reference)``.

    python -m bench.bench_instance_modulation            # all shapes
    python -m bench.bench_instance_modulation --quick    # the issue's headline shape only
    python -m bench.bench_instance_modulation --layouts block,random,own   # headline shape per id layout
    python -m bench.bench_instance_modulation --sweep-instances            # headline shape, L = 1 .. 256

Besides the op itself, the headline shape is also timed as a whole norm layer
(``inade.nn.INADENorm``: tables from ``L_m`` class distributions and the noise,
then the op) against the public code's layer (per-pixel class and noise maps
from one-hot maps, six ``einsum``s), since that is the work the op replaces.
"""
from __future__ import annotations


import sys

import torch

from bench import common, official_style
from inade.ops import instance_modulation, reference

# Layer-level case: (name, B, C, H, W, L, L_m, noise_nc)
LAYER_SHAPES = [("layer-B2-C256-64x128-L32-Lm36", 2, 256, 64, 128, 32, 36, 64)]
# (name, B, C, H, W, L)
SHAPES = [
    ("B2-C256-64x128-L32", 2, 256, 64, 128, 32),
    ("B2-C64-256x256-L32", 2, 64, 256, 256, 32),
    ("B1-C1024-16x32-L64", 1, 1024, 16, 32, 64),
    ("B4-C128-256x512-L64", 4, 128, 256, 512, 64),
]
# Norm inputs of the Cityscapes generator (256x512 output, ngf 64, "more" upsampling), B=1, L=32.
CITYSCAPES_LAYERS = [
    ("city-head-C1024-4x8", 1, 1024, 4, 8, 32),
    ("city-mid0-C1024-8x16", 1, 1024, 8, 16, 32),
    ("city-mid1-C1024-16x32", 1, 1024, 16, 32, 32),
    ("city-up0-C1024-32x64", 1, 1024, 32, 64, 32),
    ("city-up0-C512-32x64", 1, 512, 32, 64, 32),
    ("city-up1-C512-64x128", 1, 512, 64, 128, 32),
    ("city-up1-C256-64x128", 1, 256, 64, 128, 32),
    ("city-up2-C256-128x256", 1, 256, 128, 256, 32),
    ("city-up2-C128-128x256", 1, 128, 128, 256, 32),
    ("city-up3-C128-256x512", 1, 128, 256, 512, 32),
    ("city-up3-C64-256x512", 1, 64, 256, 512, 32),
]


def make_case(B, C, H, W, L, dtype, device, seed=0, layout="block"):
    """``(x, inst, gamma, beta, dy)``; inst of ``layout`` (:func:`bench.common.index_map`;
    by default 8x8-pixel blocks of random ids, like real instance maps: runs of equal ids)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, H, W, generator=g).to(device, dtype)
    inst = common.index_map(B, H, W, L, layout, g).to(device)
    gamma = torch.randn(B, L, C, generator=g).to(device, dtype)
    beta = torch.randn(B, L, C, generator=g).to(device, dtype)
    dy = torch.randn(B, C, H, W, generator=g).to(device, dtype)
    return x, inst, gamma, beta, dy


def floor_bytes(x, inst, gamma, backward: bool) -> int:
    """Bytes the op must move at minimum: every input read once, every output written once."""
    fmap = x.numel() * x.element_size()
    tables = 2 * gamma.numel() * gamma.element_size()
    total = 2 * fmap + inst.numel() * inst.element_size() + tables + 2 * x.shape[1] * 4
    if backward:
        total += 2 * fmap + tables  # read dy, write dx, write dgamma and dbeta
    return total


def candidates(device):
    """name -> function(x, inst, gamma, beta, running_mean, running_var) running the op in training mode."""

    def ours(x, inst, gamma, beta, rm, rv):
        return instance_modulation(x, inst, gamma, beta, running_mean=rm, running_var=rv)

    def official(x, inst, gamma, beta, rm, rv):
        return official_style.modulation(x, inst, gamma, beta, running_mean=rm, running_var=rv)

    def plain_reference(x, inst, gamma, beta, rm, rv):
        return reference.instance_modulation(x, inst, gamma, beta, running_mean=rm, running_var=rv)

    return common.candidates(device, ours, official, plain_reference)


def measure(fn, case, device, min_run_time):
    x, inst, gamma, beta, dy = case
    C = x.shape[1]
    rm, rv = torch.zeros(C, device=device), torch.ones(C, device=device)
    leaves = [t.detach().clone().requires_grad_() for t in (x, gamma, beta)]

    def forward():
        with torch.no_grad():
            return fn(x, inst, gamma, beta, rm, rv)

    def forward_backward():
        xl, gl, bl = leaves
        y = fn(xl, inst, gl, bl, rm, rv)
        xl.grad = gl.grad = bl.grad = None
        y.backward(dy)

    return common.time_forward_and_backward(forward, forward_backward, device, min_run_time)


def run(shapes, dtypes, device, min_run_time, layout="block", backends=None):
    """Rows of every backend (or of ``backends``) at each shape and dtype, index maps of ``layout``."""
    rows = []
    peak = common.peak_bandwidth(device)
    for name, B, C, H, W, L in common.progress(shapes, desc="instance_modulation", unit="shape"):
        for dtype in dtypes:
            case = make_case(B, C, H, W, L, dtype, device, layout=layout)
            results = {cand: measure(fn, case, device, min_run_time) for cand, fn in candidates(device).items()
                       if backends is None or cand in backends}
            base_official = results.get("official-style", {}).get("fwd_bwd_ms")
            base_compile = results.get("compile(reference)", {}).get("fwd_bwd_ms")
            base_reference = results.get("reference", {}).get("fwd_bwd_ms")
            for cand, r in results.items():
                row = {"op": "instance_modulation", "shape": name, "dtype": str(dtype).replace("torch.", ""),
                       "backend": cand, **r}
                if "fwd_bwd_ms" in r:
                    gbs = floor_bytes(case[0], case[1], case[2], True) / (r["fwd_bwd_ms"] * 1e-3) / 1e9
                    row["fwd_bwd_GBps"] = gbs
                    row["fwd_GBps"] = floor_bytes(case[0], case[1], case[2], False) / (r["fwd_ms"] * 1e-3) / 1e9
                    if peak:
                        row["fwd_bwd_pct_peak_bw"] = 100 * gbs * 1e9 / peak
                    for key, base in (("x_vs_official", base_official), ("x_vs_compile", base_compile),
                                      ("x_vs_reference", base_reference)):
                        if base:
                            row[key] = base / r["fwd_bwd_ms"]
                rows.append(row)
    return rows


def run_layer(shapes, device, min_run_time):
    """INADENorm (ours, default backend) vs the public code's layer, training mode, fwd+bwd."""
    from inade.nn import INADENorm, instance_classes  # noqa: PLC0415

    rows = []
    for name, B, C, H, W, L, M, N in shapes:
        g = torch.Generator().manual_seed(0)
        norm = INADENorm(C, M, N).to(device)
        x, inst, _, _, dy = make_case(B, C, H, W, L, torch.float32, device)
        cls = torch.randint(0, M, (B, L), generator=g).to(device)
        label = torch.gather(cls, 1, inst.flatten(1)).view(B, H, W)
        noise = torch.randn(B, L, 2, N, generator=g).to(device)
        seg = official_style.one_hot_map(label, M, x.dtype).contiguous()
        ins = official_style.one_hot_map(inst, L, x.dtype).contiguous()
        cls = instance_classes(label, inst, L)  # once per generator forward, shared by every layer
        xl = x.clone().requires_grad_()

        def ours():
            return norm(xl, inst, cls, noise)

        def official():
            return official_style.inade_norm_layer(norm, xl, seg, ins, noise)

        results = {}
        for cand, fn in (("official-style layer", official), ("INADENorm (ours)", ours)):
            def fwd_bwd(fn=fn):
                xl.grad = None
                norm.zero_grad(set_to_none=True)
                fn().backward(dy)

            with torch.no_grad():
                fwd = common.median_ms(fn, device, min_run_time)
            results[cand] = {"fwd_ms": fwd, "fwd_bwd_ms": common.median_ms(fwd_bwd, device, min_run_time),
                             "peak_extra_MB": common.peak_extra_bytes(fwd_bwd, device) / 2**20}
        base = results["official-style layer"]["fwd_bwd_ms"]
        for cand, r in results.items():
            rows.append({"op": "INADE norm layer", "shape": name, "dtype": "float32", "backend": cand, **r,
                         "x_vs_official": base / r["fwd_bwd_ms"]})
    return rows


NOTES = ("training mode, forward+backward = y.backward(dy); GB/s against the floor bytes "
         "(each input read once, each output written once)")


@common.interruptible
def main(argv=None):
    args, device = common.parse(__doc__, argv)
    if args.layouts or args.sweep_instances:
        _, B, C, H, W, L = SHAPES[0]

        def run_one(n, layout, backends):
            return run([(f"B{B}-C{C}-{H}x{W}-L{n}", B, C, H, W, n)], [torch.float32], device, args.min_run_time,
                       layout, backends)

        # own (L = H*W): the one-hot path's [B, H*W, H, W] maps do not fit, so it is left out.
        return common.run_layout_tables(
            args, device, "instance_modulation", run_one, num_instances=L, pixels=H * W,
            layout_backends=lambda lay: ("reference", common.fused_backend(device)) if lay == "own"
            else ("official-style", "reference", common.fused_backend(device)),
            sweep_backends=("official-style", common.fused_backend(device)),
            columns=["fwd_ms", "fwd_bwd_ms", "fwd_bwd_GBps", "x_vs_official", "x_vs_reference"], notes=NOTES)
    if args.quick:
        shapes, dtypes = SHAPES[:1], [torch.float32]
    else:
        shapes = SHAPES + CITYSCAPES_LAYERS
        dtypes = [torch.float32] if device.type == "cpu" else [torch.float32, torch.bfloat16]
        if device.type == "cpu":  # the 4x128x256x512 case is GPU-sized
            shapes = [s for s in shapes if s[0] != "B4-C128-256x512-L64"]
    rows = run(shapes, dtypes, device, args.min_run_time) + run_layer(LAYER_SHAPES, device, args.min_run_time)
    columns = ["shape", "dtype", "backend", "fwd_ms", "fwd_bwd_ms", "fwd_bwd_GBps", "fwd_bwd_pct_peak_bw",
               "peak_extra_MB", "x_vs_official", "x_vs_compile", "x_vs_reference", "error"]
    print(common.markdown_table(rows, columns))
    if not args.no_write:
        notes = NOTES + ("; " + common.load_note() if device.type == "cpu" else "")
        print("wrote", common.write_results("instance_modulation" + ("_quick" if args.quick else ""), rows, device, notes))


if __name__ == "__main__":
    sys.exit(main())
