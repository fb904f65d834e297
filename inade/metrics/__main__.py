"""``python -m inade.metrics``: FID, statistics, LPIPS, and every metric of a results folder.

    python -m inade.metrics fid REAL_DIR_OR_STATS FAKE_DIR [--inception_weights F] [--resize_size S]
    python -m inade.metrics stats IMAGE_DIR OUT.npz|OUT_DIR     # OUT_DIR gets m.npy, s.npy (train_mu_si layout)
    python -m inade.metrics lpips DIR_A DIR_B                    # mean LPIPS over same-named images
    python -m inade.metrics all results/inade_synthetic/test_latest [--real STATS] [--segmenter S]
    python -m inade.metrics synthetic --checkpoint checkpoints/inade_synthetic/latest.pt   # known truth

A results folder of ``python -m inade.test`` is checked against its ``test_run.json`` (every file
listed, sizes and SHA-256, no unlisted image) before any metric reads it: a folder that mixes runs
is refused.

Weight files: ``--inception_weights`` / ``$INADE_INCEPTION_WEIGHTS``, ``--alexnet_weights`` /
``$INADE_ALEXNET_WEIGHTS`` (``--vgg16_weights`` / ``$INADE_VGG16_WEIGHTS``), ``--lpips_weights`` /
``$INADE_LPIPS_WEIGHTS`` (lpips' ``weights/v0.1`` folder). ``all`` skips, and says so, a metric
whose files are not given; the other commands need theirs. Errors: one line ``error: …``, exit 2.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

from inade.metrics import diversity as div
from inade.metrics import results as run_files
from inade.metrics import synthetic
from inade.metrics.fid import fid, inception_features, load_statistics, save_statistics, statistics
from inade.metrics.images import list_images, load_image
from inade.metrics.inception import load_inception
from inade.metrics.lpips import LPIPS
from inade.metrics.weights import ALEXNET, INCEPTION, LPIPS_LIN, VGG16, MetricsError
from inade.training.options import resize_size
from inade.utils.arguments import ArgumentParser, at_least, device, positive_finite
from inade.utils.errors import USER_ERRORS, report
from inade.utils.files import write_text_atomic


def _weights_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--inception_weights", default=None, help=f"{INCEPTION.filename} (default ${INCEPTION.env})")
    p.add_argument("--alexnet_weights", default=None, help=f"{ALEXNET.filename} (default ${ALEXNET.env})")
    p.add_argument("--vgg16_weights", default=None, help=f"{VGG16.filename} (default ${VGG16.env})")
    p.add_argument("--lpips_weights", default=None, help="lpips weights/v0.1 folder or its alex.pth / vgg.pth "
                   f"(default ${LPIPS_LIN['alex'].env})")
    p.add_argument("--lpips_net", default="alex", choices=("alex", "vgg"))
    p.add_argument("--device", type=device, default="cpu")
    p.add_argument("--batch_size", type=at_least(1), default=50, help="images per Inception forward (none is dropped)")
    p.add_argument("--resize_size", type=resize_size, default=-1, help="pre-resize to (S, ratio*S), the public script's option")
    p.add_argument("--resize_ratio", type=positive_finite, default=2.0, help="width/height of --resize_size (2: Cityscapes)")
    p.add_argument("--method", default="sqrtm", choices=("sqrtm", "eigh"), help="matrix square root (sqrtm = pytorch-fid)")
    p.add_argument("--no_progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m inade.metrics", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fid", help="FID between two folders (or statistics and a folder)")
    f.add_argument("real", help="image folder, .npz statistics, or a folder with m.npy and s.npy")
    f.add_argument("fake", help="image folder (or statistics)")
    f.add_argument("--json", default=None, help="also write the result here")
    _weights_args(f)
    s = sub.add_parser("stats", help="save FID statistics of an image folder")
    s.add_argument("images")
    s.add_argument("out", help="OUT.npz (pytorch-fid) or a folder (m.npy, s.npy: the public code's train_mu_si/<dataset>)")
    _weights_args(s)
    lp = sub.add_parser("lpips", help="mean LPIPS between same-named images of two folders")
    lp.add_argument("a")
    lp.add_argument("b")
    _weights_args(lp)
    a = sub.add_parser("all", help="every metric of a python -m inade.test results folder -> JSON + Markdown")
    a.add_argument("results", help="results/<name>/test_<epoch> (images/synthesized_image*/, images/real_image/, "
                   "images/input_label/, test_run.json)")
    a.add_argument("--real", default=None, help="FID reference: statistics or an image folder (default: images/real_image/)")
    a.add_argument("--segmenter", default=None, help="TorchScript file or module:function for mIoU / accuracy")
    a.add_argument("--ignore_index", type=int, default=None, help="label not counted by mIoU (default: don't-care class)")
    a.add_argument("--checkpoint", default=None, help="generator for mISD/mOID, mCSD/mOCD (default: from test_run.json)")
    a.add_argument("--no_generator", action="store_true", help="skip the resampling metrics")
    a.add_argument("--layouts", type=at_least(1), default=16, help="test layouts for the resampling metrics")
    a.add_argument("--samples", type=at_least(2), default=4, help="images per resampled region (pairs: samples*(samples-1)/2)")
    a.add_argument("--max_regions", type=at_least(1), default=None, help="regions per layout (default all)")
    a.add_argument("--rounds", type=at_least(1), default=10, help="LPIPS diversity: random pairs of style groups")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--json", default=None, help="default RESULTS/metrics.json")
    a.add_argument("--md", default=None, help="default RESULTS/metrics.md")
    _weights_args(a)
    synthetic.add_parser(sub)
    return p


# ---------------------------------------------------------------------------
# Small commands
# ---------------------------------------------------------------------------


def _feature_kw(args) -> dict:
    return {"batch_size": args.batch_size, "resize_size": args.resize_size if args.resize_size > 0 else None,
            "resize_ratio": args.resize_ratio, "progress": not args.no_progress and sys.stderr.isatty()}


def _need(*paths) -> None:
    """Every path exists; an image folder of an inade.test results folder agrees with its test_run.json."""
    for p in paths:
        if not Path(p).exists():
            raise MetricsError(f"not found: {p}")
        root = run_files.results_root(p) if Path(p).is_dir() else None
        if root is not None:
            run_files.verify(root)


def _write(path, text: str, option: str) -> Path:
    try:
        return write_text_atomic(path, text)
    except OSError as e:
        raise MetricsError(f"{option} {path}: cannot write ({e.strerror or e})") from None


def _stats_like(path) -> bool:
    p = Path(path)
    return p.suffix == ".npz" or (p.is_dir() and (p / "m.npy").exists())


def _writable(path, option: str) -> None:
    """Fail before any work when the output's folder cannot be made (e.g. a file is in the way)."""
    folder = Path(path) if option == "out" and Path(path).suffix != ".npz" else Path(path).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MetricsError(f"{option if option != 'out' else 'statistics output'} {path}: cannot write there "
                           f"({e.strerror or e})") from None


def cmd_fid(args, log) -> int:
    _need(args.real, args.fake)
    for side in (args.real, args.fake):  # statistics are read (and checked) before the network loads
        if _stats_like(side):
            load_statistics(side)
    if args.json:
        _writable(args.json, "--json")
    start = time.perf_counter()
    net = load_inception(args.inception_weights, args.device)
    value = fid(args.real, args.fake, net=net, method=args.method, log=log, **_feature_kw(args))
    print(f"FID: {value:.4f}")
    if args.json:
        _write(args.json, json.dumps({"fid": value, "real": args.real, "fake": args.fake,
                                      "seconds": time.perf_counter() - start}, indent=2) + "\n", "--json")
    return 0


def cmd_stats(args, log) -> int:
    _need(args.images)
    _writable(args.out, "out")
    net = load_inception(args.inception_weights, args.device)
    s = statistics(inception_features(args.images, net, **_feature_kw(args)))
    out = save_statistics(args.out, s)
    log(f"statistics of {s.count} images -> {out}")
    return 0


def _load_lpips(args) -> LPIPS:
    backbone = args.alexnet_weights if args.lpips_net == "alex" else args.vgg16_weights
    return LPIPS(args.lpips_net, backbone, args.lpips_weights).to(args.device)


def _unit(path) -> torch.Tensor:
    """An image file as ``[1, 3, H, W]`` in ``[-1, 1]``."""
    return torch.from_numpy(load_image(path).copy()).permute(2, 0, 1)[None].float().div(127.5).sub(1)


def _paired(a: Path, b: Path) -> list[tuple[Path, Path]]:
    fa, fb = list_images(a), {p.name: p for p in list_images(b)}
    missing = [p.name for p in fa if p.name not in fb]
    if missing:
        raise MetricsError(f"{b}: no image named {missing[0]} (every image of {a} needs a same-named one)")
    return [(p, fb[p.name]) for p in fa]


def _check_pair(x: torch.Tensor, y: torch.Tensor, pa: Path, pb: Path) -> None:
    if x.shape != y.shape:
        raise MetricsError(f"size mismatch: {pa} is {x.shape[-1]}x{x.shape[-2]} but {pb} is {y.shape[-1]}x{y.shape[-2]}")


def cmd_lpips(args, log) -> int:
    _need(args.a, args.b)
    lp = _load_lpips(args)
    ds = []
    with torch.no_grad():
        for pa, pb in _paired(Path(args.a), Path(args.b)):
            x, y = _unit(pa), _unit(pb)
            _check_pair(x, y, pa, pb)
            ds.append(float(lp(x.to(args.device), y.to(args.device))))
    print(f"LPIPS ({args.lpips_net}, v0.1): {sum(ds) / len(ds):.4f} over {len(ds)} pairs")
    return 0


# ---------------------------------------------------------------------------
# all
# ---------------------------------------------------------------------------


def _optional(given, spec) -> bool:
    """Whether a weight file was asked for (argument or environment variable)."""
    return given is not None or bool(os.environ.get(spec.env))


def _style_groups(results: Path) -> list[list[Path]]:
    images = run_files.image_root(results)
    folders = [images / "synthesized_image"] + sorted(
        (p for p in images.glob("synthesized_image_*") if p.is_dir() and p.name.rsplit("_", 1)[1].isdigit()),
        key=lambda p: int(p.name.rsplit("_", 1)[1]))
    if not folders[0].is_dir():
        raise MetricsError(f"{results}: no synthesized_image/ folder (run python -m inade.test first)")
    groups = [list_images(folders[0])]
    names = [p.name for p in groups[0]]
    for f in folders[1:]:
        groups.append([pb for _, pb in _paired(folders[0], f)])
    for g in groups:
        if [p.name for p in g] != names:
            raise MetricsError(f"style folders of {results} hold different image names")
    return groups


def _group_diversity(groups, distance, args) -> dict:
    lazy = [[(lambda p=p: _unit(p).to(args.device)) for p in g] for g in groups]
    return div.group_diversity(lazy, distance, rounds=args.rounds, seed=args.seed)


def _generator_layouts(meta: dict, args):
    """The Synthesizer and the first ``--layouts`` test layouts, rebuilt from test_run.json."""
    import inade  # noqa: PLC0415
    from inade.cli import load_models  # noqa: PLC0415
    from inade.data import build_dataset  # noqa: PLC0415

    from inade.training.checkpoint import load_checkpoint  # noqa: PLC0415

    ckpt = args.checkpoint or meta.get("checkpoint")
    if not ckpt:
        raise MetricsError("the resampling metrics need the generator: --checkpoint, or a test_run.json from inade.test")
    obj = load_checkpoint(ckpt)
    if isinstance(obj, dict) and "G" in obj and obj.get("config") is not None:
        G, _, cfg = load_models(ckpt, device=args.device, saved=obj)
    elif meta.get("config"):  # a public-code file: the configuration inade.test used
        cfg = inade.Config(**meta["config"])
        G = inade.load_official(inade.Generator(cfg), obj).to(args.device)
    else:
        raise MetricsError(f"{ckpt}: holds no configuration and there is no test_run.json beside the results")
    data = build_dataset(cfg, meta.get("dataroot"), phase=meta.get("phase", "test"),
                         synthetic_size=int(meta.get("synthetic_size", 64)), seed=int(meta.get("data_seed", 0)))
    n = min(len(data), args.layouts)
    return inade.Synthesizer(G, None, cfg), [data[i] for i in range(n)], cfg


def _segmentation(results: Path, args, cfg_dict: dict) -> dict:
    from inade.data import read_index_map  # noqa: PLC0415
    from inade.metrics.segmentation import ConfusionMeter, load_segmenter, segment  # noqa: PLC0415

    net = load_segmenter(args.segmenter, args.device)
    label_nc = int(cfg_dict.get("label_nc", 0))
    dontcare = bool(cfg_dict.get("contain_dontcare_label", False))
    if label_nc <= 0:
        raise MetricsError(f"{results}/test_run.json: no label_nc (needed for mIoU)")
    ignore = args.ignore_index if args.ignore_index is not None else (label_nc if dontcare else None)
    meter = ConfusionMeter(label_nc, ignore)
    images = run_files.image_root(results)
    for p in list_images(images / "synthesized_image"):
        lab_path = images / "input_label" / p.name
        if not lab_path.is_file():
            raise MetricsError(f"{lab_path}: missing (mIoU compares each synthesized image with its input_label)")
        label = torch.from_numpy(read_index_map(lab_path))
        img = (_unit(p) + 1) / 2
        if tuple(img.shape[-2:]) != tuple(label.shape):
            raise MetricsError(f"size mismatch: {p} is {img.shape[-1]}x{img.shape[-2]} but {lab_path} is "
                               f"{label.shape[1]}x{label.shape[0]}")
        meter.update(segment(net, img.to(args.device), tuple(label.shape))[0], label)
    r = meter.result()
    r["ignore_index"] = ignore
    return r


def cmd_all(args, log) -> int:
    results = Path(args.results)
    if not results.is_dir():
        raise MetricsError(f"results folder not found: {results}")
    meta = run_files.verify(results)
    images = run_files.image_root(results)
    out: dict = {"results": str(results), "load_average": list(os.getloadavg()), "metrics": {}, "skipped": {}}
    m, skipped = out["metrics"], out["skipped"]
    t0 = time.perf_counter()

    # FID
    if _optional(args.inception_weights, INCEPTION):
        real = args.real or str(images / "real_image")
        log(f"FID: {real} vs {images / 'synthesized_image'}")
        net = load_inception(args.inception_weights, args.device)
        m["FID"] = fid(real, images / "synthesized_image", net=net, method=args.method, **_feature_kw(args))
    else:
        skipped["FID"] = f"needs {INCEPTION.filename} (--inception_weights or ${INCEPTION.env})"

    # Diversity between style groups
    groups = _style_groups(results)
    lp = None
    if _optional(args.alexnet_weights if args.lpips_net == "alex" else args.vgg16_weights,
                 ALEXNET if args.lpips_net == "alex" else VGG16) or args.lpips_weights:
        lp = _load_lpips(args)
    if len(groups) >= 2:
        m["L1 diversity"] = _group_diversity(groups, div.l1_distance, args)["mean"]
        if lp is not None:
            m["LPIPS"] = _group_diversity(groups, lambda a, b: lp(a, b), args)["mean"]
        else:
            skipped["LPIPS"] = "needs the LPIPS weight files (--alexnet_weights, --lpips_weights)"
    else:
        skipped["LPIPS"] = skipped["L1 diversity"] = "needs >= 2 styles per layout (python -m inade.test --samples N)"

    # Resampling metrics
    if args.no_generator:
        skipped["mISD/mOID, mCSD/mOCD"] = "--no_generator"
    else:
        synth, layouts, _ = _generator_layouts(meta, args)
        dists = [("L1 ", div.l1_pair_maps)] + ([("", div.lpips_pair_maps(lp))] if lp is not None else [])
        for prefix, dist in dists:
            for level, (a, b) in (("instance", ("mISD", "mOID")), ("class", ("mCSD", "mOCD"))):
                log(f"{prefix}{a}/{b} on {len(layouts)} layouts ...")
                r = div.instance_diversity(synth, layouts, dist, samples=args.samples, seed=args.seed,
                                           level=level, max_regions=args.max_regions)
                m[f"{prefix}{a}"], m[f"{prefix}{b}"] = r["inside"], r["outside"]
                out.setdefault("regions", {})[f"{prefix}{level}"] = r["regions"]
        if lp is None:
            skipped["mISD/mOID, mCSD/mOCD (LPIPS)"] = "needs the LPIPS weight files; the L1 twins are given"
        out["resampling"] = {"layouts": len(layouts), "samples": args.samples, "seed": args.seed}

    # Segmentation
    if args.segmenter:
        seg = _segmentation(results, args, meta.get("config") or {})
        m["mIoU"], m["accuracy"] = seg["mIoU"], seg["accuracy"]
        out["segmentation"] = seg
    else:
        skipped["mIoU / accuracy"] = "needs a segmentation network (--segmenter FILE.pt or module:function)"

    out["seconds"] = time.perf_counter() - t0
    json_path = Path(args.json) if args.json else results / "metrics.json"
    md_path = Path(args.md) if args.md else results / "metrics.md"
    _write(json_path, json.dumps(out, indent=2) + "\n", "--json")
    md = format_markdown(out)
    _write(md_path, md, "--md")
    print(md, end="")
    log(f"wrote {json_path} and {md_path}")
    return 0


def format_markdown(out: dict) -> str:
    """The metrics as a Markdown table (skipped ones with the reason)."""
    arrows = {"FID": "↓", "LPIPS": "↑", "diversity": "↑", "mISD": "↑", "mOID": "↓", "mCSD": "↑", "mOCD": "↓", "mIoU": "↑", "accuracy": "↑"}
    lines = [f"Metrics of `{out['results']}`", "", "| metric | value |", "| --- | ---: |"]
    for k, v in out["metrics"].items():
        arrow = arrows.get(k.split()[-1], "")
        lines.append(f"| {k} {arrow} | {v:.4f} |" if isinstance(v, float) and math.isfinite(v) else f"| {k} {arrow} | {v} |")
    for k, why in out["skipped"].items():
        lines.append(f"| {k} | — ({why}) |")
    return "\n".join(lines) + "\n"


COMMANDS = {"fid": cmd_fid, "stats": cmd_stats, "lpips": cmd_lpips, "all": cmd_all, "synthetic": synthetic.run}


def main(argv=None) -> int:
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args, log) or 0
    except (MetricsError, *USER_ERRORS) as e:
        return report(e)


if __name__ == "__main__":
    sys.exit(main())
