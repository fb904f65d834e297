"""Benchmark of instance_conv2d (the noise-remapping encoder's instance-aware conv).

Per shape and backend: forward and forward+backward (input, weight and bias
gradients) median time, the FLOPs the convolution must do (``2·B·C_out·Ho·Wo·C_in·k²``
forward, three times that forward+backward) and the achieved GFLOP/s, the bytes it
must move at minimum (each input read once, each output written once) and the
achieved GB/s, peak extra memory, and speed-ups against the official-style path
(full ``unfold`` of the input and of the ids + ``einsum``, ``bench/official_style.py``),
against the plain reference and ``torch.compile(reference)``, and the ratio to a
dense ``F.conv2d`` of the same shape (which ignores instances: the floor a masked
convolution can hope to reach).

Shapes: every instance-aware conv of the noise-remapping encoder (CelebAMask-HQ /
ADE20K configuration: 256x256 input, ngf 64, noise_nc 64, k 3, padding 1, strides
from the public code), B=4, L=32, and the issue's headline shape
(B=2, C_in 64, C_out 128, 128x128, k3 s1, L=32).

    python -m bench.bench_instance_conv2d            # all shapes
    python -m bench.bench_instance_conv2d --quick    # the headline shape only
    python -m bench.bench_instance_conv2d --layouts block,random,own   # headline shape per id layout
    python -m bench.bench_instance_conv2d --sweep-instances            # headline shape, L = 1 .. 256
"""
from __future__ import annotations


import sys

import torch
import torch.nn.functional as F

from bench import common, official_style
from inade.ops import instance_conv2d, reference

# (name, B, C_in, C_out, H, W, k, stride, padding, L); H, W are the conv's input size.
HEADLINE = ("B2-C64to128-128x128-k3s1-L32", 2, 64, 128, 128, 128, 3, 1, 1, 32)
ENCODER_LAYERS = [
    ("enc-layer1-C3to64-256x256-s2", 4, 3, 64, 256, 256, 3, 2, 1, 32),
    ("enc-layer2-C64to128-128x128-s2", 4, 64, 128, 128, 128, 3, 2, 1, 32),
    ("enc-layer3-C128to256-64x64-s2", 4, 128, 256, 64, 64, 3, 2, 1, 32),
    ("enc-layer4-C256to512-32x32-s2", 4, 256, 512, 32, 32, 3, 2, 1, 32),
    ("enc-middle-C512to256-16x16", 4, 512, 256, 16, 16, 3, 1, 1, 32),
    ("enc-up1-C512to128-32x32", 4, 512, 128, 32, 32, 3, 1, 1, 32),
    ("enc-up2-C256to64-64x64", 4, 256, 64, 64, 64, 3, 1, 1, 32),
    ("enc-up3-C128to64-128x128", 4, 128, 64, 128, 128, 3, 1, 1, 32),
    ("enc-head-C64to64-256x256", 4, 64, 64, 256, 256, 3, 1, 1, 32),  # x4: mu/logvar for gamma/beta
]


def make_case(B, C_in, C_out, H, W, k, stride, padding, L, dtype, device, seed=0, layout="block"):
    """``(x, inst, weight, bias, dy)``; inst of ``layout`` (:func:`bench.common.index_map`;
    by default 8x8-pixel blocks of random ids, like real instance maps)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C_in, H, W, generator=g).to(device, dtype)
    inst = common.index_map(B, H, W, L, layout, g).to(device)
    weight = (torch.randn(C_out, C_in, k, k, generator=g) / (C_in * k * k) ** 0.5).to(device, dtype)
    bias = torch.randn(C_out, generator=g).to(device, dtype)
    h_out, w_out = (H + 2 * padding - k) // stride + 1, (W + 2 * padding - k) // stride + 1
    dy = torch.randn(B, C_out, h_out, w_out, generator=g).to(device, dtype)
    return x, inst, weight, bias, dy


def conv_flops(x, weight, dy) -> int:
    """Multiply-adds ×2 of the forward convolution: ``2·B·C_out·Ho·Wo·C_in·k²``."""
    B, C_out, h_out, w_out = dy.shape
    return 2 * B * C_out * h_out * w_out * weight.shape[1] * weight.shape[2] * weight.shape[3]


def floor_bytes(x, inst, weight, bias, dy, backward: bool) -> int:
    """Bytes the op must move at minimum: every input read once, every output written once."""
    params = weight.numel() * weight.element_size() + bias.numel() * bias.element_size()
    total = x.numel() * x.element_size() + inst.numel() * inst.element_size() + params + dy.numel() * dy.element_size()
    if backward:  # read dy, write dx, the weight and bias gradients
        total += dy.numel() * dy.element_size() + x.numel() * x.element_size() + params
    return total


def candidates(device, stride, padding, compile_reference=True):
    """name -> function(x, inst, weight, bias) computing the conv."""

    def ours(x, inst, w, b):
        return instance_conv2d(x, inst, w, b, stride, padding)

    def official(x, inst, w, b):
        return official_style.conv2d_unfold(x, inst, w, b, stride, padding)

    def plain_reference(x, inst, w, b):
        return reference.instance_conv2d(x, inst, w, b, stride, padding)

    def dense(x, inst, w, b):
        return F.conv2d(x, w, b, stride, padding)

    return common.candidates(device, ours, official, plain_reference, compile_reference=compile_reference,
                             extra={"dense F.conv2d": dense})


def measure(fn, case, device, min_run_time):
    x, inst, weight, bias, dy = case
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight, bias)]

    def forward():
        with torch.no_grad():
            return fn(x, inst, weight, bias)

    def forward_backward():
        xl, wl, bl = leaves
        y = fn(xl, inst, wl, bl)
        xl.grad = wl.grad = bl.grad = None
        y.backward(dy)

    return common.time_forward_and_backward(forward, forward_backward, device, min_run_time)


def run(shapes, dtypes, device, min_run_time, skip=(), layout="block", backends=None):
    """Rows of every backend (or of ``backends``) at each shape and dtype, index maps of
    ``layout``; ``skip``: (shape name, backend) pairs reported as skipped."""
    rows = []
    for shape in common.progress(shapes, desc="instance_conv2d", unit="shape"):
        name, *dims = shape
        stride, padding = dims[6], dims[7]
        for dtype in dtypes:
            case = make_case(*dims, dtype, device, layout=layout)
            flops = conv_flops(case[0], case[2], case[4])
            results = {}
            for cand, fn in candidates(device, stride, padding, backends is None).items():
                if backends is not None and cand not in backends:
                    continue
                if (name, cand) in skip:
                    results[cand] = {"error": "skipped (see notes)"}
                    continue
                results[cand] = measure(fn, case, device, min_run_time)
            bases = {key: results.get(cand, {}).get("fwd_bwd_ms") for key, cand in
                     (("x_vs_official", "official-style"), ("x_vs_compile", "compile(reference)"),
                      ("x_vs_reference", "reference"))}
            dense_ms = results.get("dense F.conv2d", {}).get("fwd_bwd_ms")
            for cand, r in results.items():
                row = {"op": "instance_conv2d", "shape": name, "dtype": str(dtype).replace("torch.", ""),
                       "backend": cand, "fwd_GFLOP": flops / 1e9, **r}
                if "fwd_bwd_ms" in r:
                    row["fwd_GFLOPs"] = flops / (r["fwd_ms"] * 1e-3) / 1e9
                    row["fwd_bwd_GFLOPs"] = 3 * flops / (r["fwd_bwd_ms"] * 1e-3) / 1e9
                    row["fwd_GBps"] = floor_bytes(*case, False) / (r["fwd_ms"] * 1e-3) / 1e9
                    row["fwd_bwd_GBps"] = floor_bytes(*case, True) / (r["fwd_bwd_ms"] * 1e-3) / 1e9
                    for key, base in bases.items():
                        if base:
                            row[key] = base / r["fwd_bwd_ms"]
                    if dense_ms:
                        row["time_vs_dense"] = r["fwd_bwd_ms"] / dense_ms
                rows.append(row)
    return rows


@common.interruptible
def main(argv=None):
    args, device = common.parse(__doc__, argv)
    if args.layouts or args.sweep_instances:
        name, B, C_in, C_out, H, W, k, s, p, L = HEADLINE

        def run_one(n, layout, backends):
            shape = (name.replace(f"L{L}", f"L{n}"), B, C_in, C_out, H, W, k, s, p, n)
            return run([shape], [torch.float32], device, args.min_run_time, (), layout, backends)

        fused = common.fused_backend(device)
        return common.run_layout_tables(
            args, device, "instance_conv2d", run_one, num_instances=L, pixels=H * W,
            layout_backends=lambda lay: ("official-style", "reference", "dense F.conv2d", fused),
            sweep_backends=("official-style", fused),
            columns=["fwd_ms", "fwd_bwd_ms", "fwd_bwd_GFLOPs", "fwd_bwd_GBps", "x_vs_official", "x_vs_reference",
                     "time_vs_dense"],
            notes="forward+backward = y.backward(dy) with gradients of x, weight and bias")
    shapes = [HEADLINE] if args.quick else [HEADLINE, *ENCODER_LAYERS]
    dtypes = [torch.float32] if args.quick or device.type == "cpu" else [torch.float32, torch.bfloat16]
    skip = ()
    notes = ("forward+backward = y.backward(dy) with gradients of x, weight and bias; GFLOP/s counts the "
             "convolution's 2*B*C_out*Ho*Wo*C_in*k^2 (x3 for forward+backward), whatever the op skips; "
             "time_vs_dense = time / dense F.conv2d time (the dense conv ignores instances)")
    if device.type == "cpu":
        # On two CPU cores torch.compile(reference) of the full-resolution head takes minutes
        # to compile and run, and adds nothing the official-style row does not show.
        skip = {("enc-head-C64to64-256x256", "compile(reference)")}
        notes += "; CPU: compile(reference) skipped for enc-head (compile time on 2 cores)"
        notes += "; " + common.load_note()
    rows = run(shapes, dtypes, device, args.min_run_time, skip)
    columns = ["shape", "dtype", "backend", "fwd_ms", "fwd_bwd_ms", "fwd_bwd_GFLOPs", "fwd_bwd_GBps", "peak_extra_MB",
               "x_vs_official", "x_vs_compile", "x_vs_reference", "time_vs_dense", "error"]
    print(common.markdown_table(rows, columns))
    if not args.no_write:
        print("wrote", common.write_results("instance_conv2d" + ("_quick" if args.quick else ""), rows, device, notes))


if __name__ == "__main__":
    sys.exit(main())
