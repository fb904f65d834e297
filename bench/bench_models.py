"""Model size and arithmetic per dataset configuration, beside the paper's Table 3.

For each configuration: the generator's parameters (exact, against the paper's
figure and the public code's count), the encoder's parameters, and the FLOPs of
one generator forward, batch 1, eval mode, at the configuration's output size
(and, last column, of one encoder forward on an image of that size, counted like
``GFLOPs (all)``):

* ``GMACs (paper)``: the paper's convention — multiply-accumulates of the
  convolutions and of the input layer ``fc`` (``torch.utils.flop_counter`` counts
  FLOPs = 2·MACs; halved here). The public code's one-hot ``einsum``s are not in
  the paper's figure, and our norms have none. The norms' small linear noise maps
  ``fc_noise`` (``2·L`` rows each, so they depend on the layout) are reported apart
  (``GMACs fc_noise``); the figures of ``shared/reference/README.md`` (75.20 G,
  42.14 G) leave them out too.
* ``GFLOPs (all)``: FLOPs of the convolutions and linear layers (2·MACs) plus the
  arithmetic of our own ops (the INADE modulation kernels, with the formulas of
  :mod:`inade.flops`). Activations, upsampling and residual additions are not
  counted (as in ``FlopCounterMode``).

The layout has ``--instances`` instances. The paper's DeepFashion row
(84.63 M) is the configuration with ``noise_nc = 64``; the public checkpoint uses
``noise_nc = 8`` (84.02 M): both rows are printed.

    python -m bench.bench_models            # about a minute on 2 CPU cores
    python -m bench.bench_models --only celeba
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings

import torch

import inade
from bench import common
from inade import flops

# Table 3 of the paper: generator parameters (M) and FLOPs (G).
PAPER = {
    "cityscapes": (77.39, 75.25),
    "ade20k": (90.89, 42.19),
    "celeba": (85.12, 42.18),
    "deepfashion-nc64": (84.63, 42.92),
}
# The public code's exact generator parameter counts (shared/reference/README.md).
PUBLIC_PARAMS = {"cityscapes": 77_394_435, "ade20k": 90_893_827, "celeba": 85_115_395, "deepfashion": 84_020_995}
ROWS = {
    "cityscapes": ("cityscapes", {}),
    "ade20k": ("ade20k", {}),
    "celeba": ("celeba", {}),
    "deepfashion": ("deepfashion", {}),
    "deepfashion-nc64": ("deepfashion", {"noise_nc": 64}),
    "cocostuff": ("cocostuff", {}),
    "synthetic": ("synthetic", {}),
}


def layout(cfg: inade.Config, num_instances: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``[1, H, W]`` label and instance map: vertical stripes, one instance each."""
    H, W = cfg.output_size
    inst = (torch.arange(W) * num_instances // W).expand(1, H, W).contiguous()
    label = inst % cfg.num_classes
    return label, inst


def encoder_cost(cfg: inade.Config, inst: torch.Tensor) -> tuple[int, float]:
    """Parameters of the noise encoder and the GFLOPs (all, :mod:`inade.flops`) of one
    forward on a reference image of the output size."""
    torch.manual_seed(0)
    E = inade.NoiseEncoder(cfg).eval()
    image = torch.rand(1, 3, *cfg.output_size) * 2 - 1
    with torch.no_grad():
        counted = flops.count(lambda: E(image, inst))
    return sum(p.numel() for p in E.parameters()), (counted["conv_linear"] + counted["inade_ops"]) / 1e9


def measure(row: str, num_instances: int) -> dict:
    name, overrides = ROWS[row]
    cfg = inade.config(name, **overrides)
    torch.manual_seed(0)
    G = inade.Generator(cfg).eval()
    params = sum(p.numel() for p in G.parameters())
    label, inst = layout(cfg, num_instances)
    start = time.perf_counter()
    with torch.no_grad():
        counted = flops.count(lambda: G(label, inst), modules=("fc_noise",))
    seconds = time.perf_counter() - start
    enc_params, enc_gflops = encoder_cost(cfg, inst)
    paper_params, paper_flops = PAPER.get(row, (None, None))
    noise_maps = counted["by_module"]["fc_noise"]
    return {
        "config": row,
        "output": "{}x{}".format(*cfg.output_size),
        "noise_nc": cfg.noise_nc,
        "params": params,
        "params_M": params / 1e6,
        "paper_params_M": paper_params,
        "public_code_params": PUBLIC_PARAMS.get(row),
        "encoder_params": enc_params,
        "encoder_gflops_all": enc_gflops,
        "gmacs_paper_convention": (counted["conv_linear"] - noise_maps) / 2 / 1e9,
        "gmacs_fc_noise": noise_maps / 2 / 1e9,
        "paper_gflops": paper_flops,
        "gflops_all": (counted["conv_linear"] + counted["inade_ops"]) / 1e9,
        "gflops_inade_ops": counted["inade_ops"] / 1e9,
        "by_op": counted["by_op"],
        "uncounted_inade_ops": counted["uncounted_inade_ops"],
        "count_seconds": seconds,
    }


@common.interruptible
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=list(ROWS), help="configurations to measure (default: all)")
    parser.add_argument("--instances", type=int, default=10, help="instances in the layout (default 10)")
    args = parser.parse_args(argv)
    rows = []
    for row in args.only or list(ROWS):
        rows.append(measure(row, args.instances))
        r = rows[-1]
        print(f"{row}: {r['params_M']:.2f} M params, {r['gmacs_paper_convention']:.2f} GMACs "
              f"({r['count_seconds']:.1f} s)", flush=True)
        if r["uncounted_inade_ops"]:
            warnings.warn(f"{row}: inade ops without a FLOP formula: {r['uncounted_inade_ops']}", stacklevel=1)
    device = torch.device("cpu")
    notes = (
        "Generator, batch 1, eval mode, output size of each configuration, "
        f"{args.instances} instances. GMACs (paper) = MACs of the convs and the input linear layer fc; "
        "GMACs fc_noise = MACs of the norms' noise maps (2*L rows each); "
        "GFLOPs (all) = 2*MACs + the INADE ops' arithmetic (inade.flops). "
        "Encoder: GFLOPs (all) of one forward on an image of the output size. "
        "Paper figures: Table 3 (deepfashion-nc64 is the paper's DeepFashion row)."
    )
    path = common.write_results("models_params_flops", rows, device, notes)
    table = common.markdown_table(
        [{**r, "params": f"{r['params']:,}", "params_M": f"{r['params_M']:.2f}",
          "gmacs_paper_convention": f"{r['gmacs_paper_convention']:.2f}",
          "gmacs_fc_noise": f"{r['gmacs_fc_noise']:.3f}",
          "paper_params_M": "" if r["paper_params_M"] is None else f"{r['paper_params_M']:.2f}",
          "paper_gflops": "" if r["paper_gflops"] is None else f"{r['paper_gflops']:.2f}",
          "gflops_all": f"{r['gflops_all']:.2f}", "gflops_inade_ops": f"{r['gflops_inade_ops']:.3f}",
          "encoder_params": f"{r['encoder_params']:,}", "encoder_gflops_all": f"{r['encoder_gflops_all']:.2f}"}
         for r in rows],
        ["config", "output", "noise_nc", "params", "params_M", "paper_params_M", "encoder_params",
         "gmacs_paper_convention", "paper_gflops", "gmacs_fc_noise", "gflops_all", "gflops_inade_ops",
         "encoder_gflops_all"],
    )
    path.with_suffix(".md").write_text(f"{table}\n\n{notes}\n")
    print(f"\n{table}\n\nwritten to {path} (and .md)")


if __name__ == "__main__":
    sys.exit(main())
