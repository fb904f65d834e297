"""Evaluate a generator on the synthetic set, where the truth is known.

    python -m inade.metrics synthetic --checkpoint checkpoints/inade_synthetic/latest.pt [--scenes 32 --samples 6]

(formerly ``python -m inade.eval``, which remains as an alias that says it moved).

Two questions, on held-out synthetic scenes (``phase="test"``):

1. **Is diversity instance-level?** (the paper's mISD / mOID idea, with an L1
   distance since LPIPS weights are not available offline). For each instance
   ``l`` of each scene: start from one random draw, then redraw only ``l``'s noise
   ``M`` times (``z`` and every other instance kept). Over the ``M(M-1)/2`` pairs of
   those images, the mean absolute pixel difference *inside* ``l`` (should be large:
   the instance changes) and *outside* ``l`` (should be near 0: the rest stays).
   Pixels are in ``[-1, 1]``.
2. **Is each class the right distribution?** Draw ``M`` random styles per scene and
   take every instance's mean colour; per class, compare those colours with the
   real instances' mean colours (the synthetic data's colours are per-class
   Gaussians): the difference of means and of standard deviations (per RGB
   channel, averaged) and the 1-D Wasserstein distance per channel (averaged).
   A *floor* row compares real colours of these scenes with real colours of other
   scenes: the values a perfect generator would get from sampling noise alone.

Prints a table and writes JSON (``--json``, default ``eval_synthetic.json`` beside
the checkpoint). The networks run in eval mode (running batch statistics).
For any dataset and the paper's metrics (FID, LPIPS, mISD/mOID, mCSD/mOCD, mIoU) see
``python -m inade.test`` and ``python -m inade.metrics all``: one family, docs/EVALUATION.md.
"""
from __future__ import annotations

import torch

from inade.data.synthetic import CLASS_NAMES, NUM_CLASSES, SyntheticScenes
from inade.metrics.diversity import all_pairs, l1_pair_maps


# ---------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------


def wasserstein_1d(a: torch.Tensor, b: torch.Tensor, quantiles: int = 200) -> float:
    """W1 between the empirical distributions of 1-D samples ``a`` and ``b``
    (mean absolute difference of their quantile functions on a uniform grid)."""
    q = (torch.arange(quantiles, dtype=torch.float64) + 0.5) / quantiles
    return float((torch.quantile(a.double(), q) - torch.quantile(b.double(), q)).abs().mean())


def compare_colors(gen: torch.Tensor, real: torch.Tensor) -> dict:
    """Per-class comparison of colour samples ``gen [N, 3]`` and ``real [M, 3]`` (RGB in [-1, 1])."""
    g, r = gen.double(), real.double()
    return {
        "n_generated": len(g),
        "n_real": len(r),
        "mean_generated": g.mean(0).tolist(),
        "mean_real": r.mean(0).tolist(),
        "std_generated": g.std(0).tolist(),
        "std_real": r.std(0).tolist(),
        "abs_mean_diff": float((g.mean(0) - r.mean(0)).abs().mean()),
        "abs_std_diff": float((g.std(0) - r.std(0)).abs().mean()),
        "std_ratio": float((g.std(0) / r.std(0).clamp_min(1e-6)).mean()),
        "w1": sum(wasserstein_1d(g[:, c], r[:, c]) for c in range(3)) / 3,
    }


def pair_distance(images: torch.Tensor) -> torch.Tensor:
    """Mean over pairs ``i < j`` of ``|x_i - x_j|`` averaged over channels: ``[M, 3, H, W]`` -> ``[H, W]``
    (the L1 map of :mod:`inade.metrics.diversity`, whose L1 mISD / mOID this evaluation reports)."""
    return l1_pair_maps(images, *all_pairs(images.shape[0])).mean(0)[0]


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------


def _draw(shape, seed: int, like: torch.Tensor) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(like)


@torch.no_grad()
def evaluate(G, cfg, *, scenes: int = 32, samples: int = 6, seed: int = 0, data_seed: int = 0, log=None) -> dict:
    """Instance diversity inside/outside and per-class colour distributions (see the module doc).

    Args:
        G: a trained :class:`inade.Generator` for the synthetic configuration.
        scenes: held-out scenes to use.
        samples: ``M``, draws per scene (random styles) and per instance (resamples).
        seed: seed of the noise draws; data_seed: the synthetic set's seed.
    """
    if cfg.label_nc != NUM_CLASSES or cfg.contain_dontcare_label:
        raise ValueError(f"the checkpoint's model has label_nc={cfg.label_nc}: the synthetic evaluation needs the synthetic "
                         f"configuration (label_nc={NUM_CLASSES}, inade.config('synthetic'))")
    if samples < 2:
        raise ValueError(f"samples must be >= 2 (diversity is measured between pairs), got {samples}")
    was_training = G.training
    G.eval()
    like = next(G.parameters())
    h, w = cfg.output_size
    test = SyntheticScenes(scenes, crop_size=w, aspect_ratio=w / h, seed=data_seed, phase="test")
    other = SyntheticScenes(scenes, crop_size=w, aspect_ratio=w / h, seed=data_seed, phase="train")
    M = samples
    inside, outside, per_class_inside = [], [], {c: [] for c in range(NUM_CLASSES)}
    random_pairs = []
    gen_colors = {c: [] for c in range(NUM_CLASSES)}
    real_colors = {c: [] for c in range(NUM_CLASSES)}
    floor_colors = {c: [] for c in range(NUM_CLASSES)}
    try:
        for s in range(scenes):
            sc = test.scene(s)
            label, inst = sc.label.to(like.device), sc.instance.to(like.device)
            L = int(inst.max()) + 1
            masks = [inst == l for l in range(L)]
            # Part 1. M random styles: every instance's noise and z drawn.
            noise = _draw((M, L, 2, cfg.noise_nc), seed * 1_000_003 + 2 * s, like)
            z = _draw((M, cfg.z_dim), seed * 1_000_003 + 2 * s + 1, like)
            styles = G(label.expand(M, -1, -1), inst.expand(M, -1, -1), noise=noise, z=z).float()
            random_pairs.append(float(pair_distance(styles).mean()))
            for l, mask in enumerate(masks):
                c = sc.classes[l]
                gen_colors[c].append(styles[:, :, mask].mean(-1).cpu())
                real_colors[c].append(sc.image[:, mask.cpu()].mean(-1)[None])
            # Part 2. From style 0, redraw one instance at a time, M times each: one batch of L*M.
            fresh = _draw((L, M, 2, cfg.noise_nc), seed * 1_000_003 + 7919 * (s + 1), like)
            table = noise[:1].expand(L * M, -1, -1, -1).clone().view(L, M, L, 2, cfg.noise_nc)
            for l in range(L):
                table[l, :, l] = fresh[l]
            images = G(label.expand(L * M, -1, -1), inst.expand(L * M, -1, -1), noise=table.view(L * M, L, 2, -1),
                       z=z[:1].expand(L * M, -1)).float().view(L, M, 3, h, w)
            for l, mask in enumerate(masks):
                d = pair_distance(images[l])
                inside.append(float(d[mask].mean()))
                outside.append(float(d[~mask].mean()) if (~mask).any() else 0.0)
                per_class_inside[sc.classes[l]].append(inside[-1])
            # The floor: real instances of other scenes.
            sc2 = other.scene(s)
            for l, c in sc2.classes.items():
                floor_colors[c].append(sc2.image[:, sc2.instance == l].mean(-1)[None])
            if log is not None and (s + 1) % 8 == 0:
                log(f"  {s + 1}/{scenes} scenes")
    finally:
        G.train(was_training)

    def cat(d, c):
        return torch.cat(d[c]) if d[c] else torch.empty(0, 3)

    colors, floor = {}, {}
    for c in range(NUM_CLASSES):
        gen, real, ref = cat(gen_colors, c), cat(real_colors, c), cat(floor_colors, c)
        if len(gen) >= 2 and len(real) >= 2:
            colors[CLASS_NAMES[c]] = compare_colors(gen, real)
        if len(ref) >= 2 and len(real) >= 2:
            floor[CLASS_NAMES[c]] = compare_colors(ref, real)
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    return {
        "scenes": scenes,
        "samples": M,
        "seed": seed,
        "diversity": {
            "inside_l1": mean(inside),
            "outside_l1": mean(outside),
            "outside_over_inside": mean(outside) / mean(inside) if mean(inside) > 0 else float("nan"),
            "random_style_l1": mean(random_pairs),
            "instances": len(inside),
            "inside_l1_per_class": {CLASS_NAMES[c]: mean(v) for c, v in per_class_inside.items() if v},
        },
        "colors": colors,
        "colors_floor": floor,
        "colors_summary": {
            "w1": mean([v["w1"] for v in colors.values()]),
            "abs_mean_diff": mean([v["abs_mean_diff"] for v in colors.values()]),
            "abs_std_diff": mean([v["abs_std_diff"] for v in colors.values()]),
            "floor_w1": mean([v["w1"] for v in floor.values()]),
            "floor_abs_mean_diff": mean([v["abs_mean_diff"] for v in floor.values()]),
            "floor_abs_std_diff": mean([v["abs_std_diff"] for v in floor.values()]),
        },
    }


def format_report(r: dict) -> str:
    """The result as Markdown tables."""
    d = r["diversity"]
    lines = [
        f"Instance resampling ({d['instances']} instances in {r['scenes']} held-out scenes, {r['samples']} draws each; "
        "mean |difference| between draws, pixels in [-1, 1]):",
        "",
        "| inside the resampled instance | outside it | outside / inside | all noise and z redrawn (whole image) |",
        "| ---: | ---: | ---: | ---: |",
        f"| {d['inside_l1']:.4f} | {d['outside_l1']:.4f} | {d['outside_over_inside']:.3f} | {d['random_style_l1']:.4f} |",
        "",
        "Per-class instance colours, generated vs real (RGB in [-1, 1], averaged over channels; "
        "floor = real vs real from other scenes):",
        "",
        "| class | n gen / real | mean gen | mean real | std gen | std real | abs mean diff | abs std diff | W1 | W1 floor | inside L1 |",
        "| --- | ---: | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    fmt = lambda v: "(" + ", ".join(f"{x:+.2f}" for x in v) + ")"  # noqa: E731
    for name, v in r["colors"].items():
        fl = r["colors_floor"].get(name, {})
        lines.append(
            f"| {name} | {v['n_generated']} / {v['n_real']} | {fmt(v['mean_generated'])} | {fmt(v['mean_real'])} | "
            f"{fmt(v['std_generated'])} | {fmt(v['std_real'])} | {v['abs_mean_diff']:.3f} | {v['abs_std_diff']:.3f} | "
            f"{v['w1']:.3f} | {fl.get('w1', float('nan')):.3f} | {d['inside_l1_per_class'].get(name, float('nan')):.3f} |"
        )
    s = r["colors_summary"]
    lines.append(
        f"| **all classes** | | | | | | {s['abs_mean_diff']:.3f} (floor {s['floor_abs_mean_diff']:.3f}) | "
        f"{s['abs_std_diff']:.3f} (floor {s['floor_abs_std_diff']:.3f}) | {s['w1']:.3f} | {s['floor_w1']:.3f} | |"
    )
    return "\n".join(lines)


def run(args, log) -> int:
    """``python -m inade.metrics synthetic``: prints the tables, writes the JSON."""
    import json  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from inade.cli import load_models, need_file  # noqa: PLC0415
    from inade.utils.checkpoint_io import load_checkpoint  # noqa: PLC0415
    from inade.utils.errors import UserError  # noqa: PLC0415
    from inade.utils.files import write_text_atomic  # noqa: PLC0415

    saved = load_checkpoint(need_file(args.checkpoint, "--checkpoint"))
    G, _, cfg = load_models(args.checkpoint, args.config, None, None, args.device, saved=saved)
    step = saved.get("step") if isinstance(saved, dict) else None  # a public file has no step
    del saved
    log(f"evaluating {args.checkpoint} on {args.scenes} held-out synthetic scenes ...")
    try:
        result = evaluate(G, cfg, scenes=args.scenes, samples=args.samples, seed=args.seed, data_seed=args.data_seed, log=log)
    except ValueError as e:
        raise UserError(str(e)) from None
    result = {"checkpoint": str(args.checkpoint), "step": step, **result}
    print(format_report(result))
    out = Path(args.json) if args.json else Path(args.checkpoint).with_name("eval_synthetic.json")
    write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    log(f"wrote {out}")
    return 0
