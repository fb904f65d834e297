"""The commands of ``python -m inade.metrics`` (:mod:`inade.metrics.__main__` parses the options
first, without torch, then calls :data:`COMMANDS`). The command line and the weight files are
described there.
"""
from __future__ import annotations

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
from inade.utils.files import write_text_atomic


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
        kept = getattr(e, "kept", None) or ("the previous file is intact" if Path(path).is_file() else "nothing was written")
        raise MetricsError(f"{option} {path}: cannot write ({e.strerror or e}); {kept}") from None


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
    from inade.data.folders import data_root  # noqa: PLC0415

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
    data = build_dataset(cfg, data_root(meta), phase=meta.get("phase", "test"),
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
