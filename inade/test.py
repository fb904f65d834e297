"""Synthesise a dataset's test split, like the public code's ``test.py``.

    python -m inade.test --name inade_synthetic                       # checkpoints/inade_synthetic/latest.pt
    python -m inade.test --name inade_cityscapes --which_epoch best \\
        --dataset_mode cityscapes --dataroot datasets/cityscapes        # best_net_G.pth (+ best_net_E.pth)
    python -m inade.test --name inade_synthetic --samples 10 --seed 0 # 10 styles per layout

Reads ``<checkpoints_dir>/<name>/``: our ``latest.pt`` / ``best.pt`` (the full training
checkpoint, configuration included) for ``--which_epoch latest`` / ``best`` when it
exists, else the public code's ``<which_epoch>_net_G.pth`` (and ``_net_E.pth`` with
``--use_vae``; the configuration then comes from ``--dataset_mode``'s preset or
``--config``). ``--checkpoint FILE`` names a file directly.

Writes ``<results_dir>/<name>/test_<which_epoch>/``:

* ``synthesized_image/<stem>.png``: style 0 of each layout (what FID reads);
  ``synthesized_image_<k>/<stem>.png`` for styles ``k = 1 … N−1`` with ``--samples N``;
* ``real_image/<stem>.png`` (the test image at the model's size) and
  ``input_label/<stem>.png`` (the class ids as a greyscale PNG, which mIoU reads; the
  public code writes a colour picture there: ours is in the grid and the page);
* ``index.html`` (a table of the first layouts) and ``grid.png`` (label | real | styles);
* ``test_run.json``: the options, the checkpoint, the images/s (``python -m inade.metrics all``
  reads it to rebuild the generator for the resampling metrics).

Style ``k`` of layout ``i`` is drawn from ``(seed, i, k)`` alone, so results do not depend
on ``--batchSize``. The networks run in eval mode (running batch statistics).
"""
from __future__ import annotations

import argparse
import html
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from inade.utils.errors import UserError, run_command
from inade.utils.files import write_text_atomic

MAX_PAGE_ROWS = 50
GRID_ROWS = 8


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m inade.test", description=__doc__.split("\n\n")[0])
    p.add_argument("--name", type=str, default="inade_synthetic", help="experiment name (a folder in checkpoints_dir)")
    p.add_argument("--checkpoints_dir", type=str, default="./checkpoints")
    p.add_argument("--which_epoch", type=str, default="latest", help="latest, best, or an epoch number")
    p.add_argument("--checkpoint", type=str, default=None, help="a checkpoint file (overrides name / which_epoch)")
    p.add_argument("--config", type=str, default=None, help="preset for a public-code checkpoint (default: dataset_mode)")
    p.add_argument("--dataset_mode", type=str, default=None, help="default: the checkpoint's")
    p.add_argument("--dataroot", type=str, default=None, help="default: the checkpoint's (unused for synthetic)")
    p.add_argument("--phase", type=str, default="test")
    p.add_argument("--batchSize", type=int, default=1)
    p.add_argument("--use_vae", action="store_true", help="styles from the encoder on the real test image (remapped noise)")
    p.add_argument("--results_dir", type=str, default="./results/")
    p.add_argument("--how_many", type=float, default=math.inf, help="how many test images to synthesise")
    p.add_argument("--gpu_ids", type=str, default="-1", help="e.g. 0; -1 for the CPU")
    p.add_argument("--samples", type=int, default=1, help="styles per layout (the diversity metrics need >= 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--synthetic_size", type=int, default=64, help="scenes in the synthetic test split")
    p.add_argument("--no_progress", action="store_true")
    g = p.add_argument_group("model options for a public-code checkpoint (ours hold their own)")
    for name, typ in MODEL_OPTIONS.items():
        g.add_argument(f"--{name}", type=typ, default=None)
    g.add_argument("--contain_dontcare_label", action="store_true", default=None)
    return p


MODEL_OPTIONS = {"label_nc": int, "ngf": int, "z_dim": int, "noise_nc": int, "crop_size": int,
                 "aspect_ratio": float, "num_upsampling_layers": str}


def model_overrides(opt) -> dict:
    """The model options given on the command line (for a public-code checkpoint)."""
    keys = list(MODEL_OPTIONS) + ["contain_dontcare_label"]
    return {k: getattr(opt, k) for k in keys if getattr(opt, k, None) is not None}


# ---------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------


def resolve_checkpoint(opt) -> tuple[Path, Path | None]:
    """``(generator file, encoder file or None)`` for ``--checkpoint`` or ``name`` / ``which_epoch``."""
    if opt.checkpoint:
        return Path(opt.checkpoint), None
    folder = Path(opt.checkpoints_dir) / opt.name
    if not folder.is_dir():
        raise UserError(f"{folder}: no such experiment folder (--checkpoints_dir / --name); train with train.py first")
    ours = folder / f"{opt.which_epoch}.pt"
    if ours.is_file():
        return ours, None
    g = folder / f"{opt.which_epoch}_net_G.pth"
    if not g.is_file():
        found = sorted(p.name for p in folder.glob("*.pt*"))
        raise UserError(f"{folder}: neither {ours.name} nor {g.name} (found: {', '.join(found) or 'nothing'})")
    e = folder / f"{opt.which_epoch}_net_E.pth"
    if opt.use_vae and not e.is_file():
        alt = folder / f"{opt.which_epoch}_net_IE.pth"  # the public release's name
        e = alt if alt.is_file() else e
        if not e.is_file():
            raise UserError(f"--use_vae needs the encoder {e} (the public release names it best_net_IE.pth)")
    return g, (e if opt.use_vae else None)


def load_generator(opt, device):
    """``(G, E or None, cfg, saved training options)``."""
    from inade.cli import load_models  # noqa: PLC0415
    from inade.training.checkpoint import load_checkpoint  # noqa: PLC0415

    g_path, e_path = resolve_checkpoint(opt)
    saved = load_checkpoint(g_path)
    ours = isinstance(saved, dict) and "G" in saved
    options = dict(saved.get("options", {})) if ours else {}
    options["_step"] = saved.get("step") if ours else None
    del saved
    preset = opt.config or (opt.dataset_mode if not ours else None)
    overrides = model_overrides(opt) if not ours else {}
    G, E, cfg = load_models(g_path, preset, overrides, e_path, device)
    if opt.dataset_mode and opt.dataset_mode != cfg.dataset_mode:
        cfg = cfg.replace(dataset_mode=opt.dataset_mode)
    if opt.use_vae and E is None:
        raise UserError(f"--use_vae: {g_path} holds no encoder")
    return G.eval(), (E.eval() if E is not None else None), cfg, options, g_path, e_path


# ---------------------------------------------------------------------------
# Synthesis
# ---------------------------------------------------------------------------


def style_seed(seed: int, index: int, k: int) -> int:
    """The seed of style ``k`` of layout ``index``."""
    return (seed * 1_000_003 + index) * 4099 + k


def synthesize(synth, batch, k: int, seed: int, E=None) -> torch.Tensor:
    """Style ``k`` of every layout of ``batch``: ``[B, 3, H, W]`` in ``[-1, 1]``."""
    label, inst = batch["label"], batch["instance"]
    device = synth._like.device
    label, inst = label.to(device), inst.to(device)
    L = int(inst.max()) + 1
    seeds = [style_seed(seed, int(i), k) for i in batch["index"]]
    noise = torch.cat([synth.draw_noise(1, L, s) for s in seeds])
    z = torch.cat([synth.draw_z(1, s) for s in seeds])
    with torch.no_grad():
        if E is not None:
            remap = E(batch["image"].to(device), inst)
            return synth.G(label, inst, noise=noise, z=z, remap=remap)
        return synth.generate(label, inst, noise, z).image


def stems(batch) -> list[str]:
    if "path" in batch:
        return [Path(p).stem for p in batch["path"]]
    return [f"{int(i):05d}" for i in batch["index"]]


def run(opt, log=print) -> Path:
    """Synthesise the split; returns the output folder."""
    import inade  # noqa: PLC0415
    from inade.data import build_dataset, write_image, write_index_map  # noqa: PLC0415
    from inade.data.images import to_uint8  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    if opt.samples < 1:
        raise UserError(f"--samples must be >= 1, got {opt.samples}")
    if opt.batchSize < 1:
        raise UserError(f"--batchSize must be >= 1, got {opt.batchSize}")
    device = torch.device("cpu" if opt.gpu_ids.strip() in ("-1", "") or not torch.cuda.is_available()
                          else f"cuda:{opt.gpu_ids.split(',')[0]}")
    G, E, cfg, options, g_path, e_path = load_generator(opt, device)
    dataroot = opt.dataroot or options.get("dataroot")
    try:
        data = build_dataset(cfg, dataroot, phase=opt.phase, synthetic_size=opt.synthetic_size,
                             seed=int(options.get("seed", 0) or 0))
    except ValueError as e:
        raise UserError(str(e)) from None
    n = int(min(len(data), opt.how_many))
    if n == 0:
        raise UserError(f"the {opt.phase} split of {cfg.dataset_mode} is empty")
    subset = torch.utils.data.Subset(data, range(n))
    loader = torch.utils.data.DataLoader(subset, batch_size=opt.batchSize, shuffle=False, num_workers=0)
    out = Path(opt.results_dir) / opt.name / f"{opt.phase}_{opt.which_epoch}"
    synth = inade.Synthesizer(G, E, cfg)
    folders = ["synthesized_image"] + [f"synthesized_image_{k}" for k in range(1, opt.samples)]
    rows, names = [], []
    log(f"synthesising {n} {cfg.dataset_mode} {opt.phase} layouts x {opt.samples} style(s) with {g_path} -> {out}")
    start = time.perf_counter()
    done = 0
    with tqdm(total=n * opt.samples, desc="test", unit="img", disable=opt.no_progress or not sys.stderr.isatty()) as bar:
        for batch in loader:
            names_b = stems(batch)
            styles = []
            for k in range(opt.samples):
                img = synthesize(synth, batch, k, opt.seed, E if opt.use_vae else None)
                styles.append(img)
                for b, stem in enumerate(names_b):
                    write_image(out / folders[k] / f"{stem}.png", to_uint8(img[b]))
                bar.update(len(names_b))
                done += len(names_b)
            for b, stem in enumerate(names_b):
                write_image(out / "real_image" / f"{stem}.png", to_uint8(batch["image"][b]))
                write_index_map(out / "input_label" / f"{stem}.png", batch["label"][b].numpy())
                if len(rows) < GRID_ROWS:
                    rows.append(_grid_row(batch, b, styles, cfg))
                names.append(stem)
    seconds = time.perf_counter() - start
    rate = done / seconds if seconds > 0 else float("inf")
    _write_index(out, names, folders, rows)
    meta = {
        "checkpoint": str(g_path), "encoder": str(e_path) if e_path else None, "step": options.get("_step"),
        "name": opt.name,
        "which_epoch": opt.which_epoch, "phase": opt.phase, "dataset_mode": cfg.dataset_mode, "dataroot": dataroot,
        "synthetic_size": opt.synthetic_size, "data_seed": int(options.get("seed", 0) or 0),
        "config": cfg.to_dict(), "samples": opt.samples, "seed": opt.seed, "use_vae": opt.use_vae,
        "images": done, "layouts": n, "seconds": seconds, "images_per_second": rate, "device": str(device),
    }
    write_text_atomic(out / "test_run.json", json.dumps(meta, indent=2) + "\n")
    log(f"{done} images in {seconds:.1f} s: {rate:.2f} images/s -> {out}")
    return out


def _grid_row(batch, b, styles, cfg) -> list[np.ndarray]:
    from inade.data.images import to_uint8  # noqa: PLC0415
    from inade.training.grids import colorize  # noqa: PLC0415

    return [colorize(batch["label"][b], cfg.num_classes), to_uint8(batch["image"][b])] + [to_uint8(s[b]) for s in styles[:6]]


def _write_index(out: Path, names: list[str], folders: list[str], rows) -> None:
    from inade.data import write_image  # noqa: PLC0415
    from inade.training.grids import assemble  # noqa: PLC0415

    if rows:
        write_image(out / "grid.png", assemble(rows))
    cols = ["real_image"] + folders[:6]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["name"] + cols)
    body = []
    for stem in names[:MAX_PAGE_ROWS]:
        cells = "".join(f'<td><img src="{c}/{html.escape(stem)}.png" width="192"></td>' for c in cols)
        body.append(f"<tr><td>{html.escape(stem)}</td>{cells}</tr>")
    page = (f"<!doctype html><meta charset='utf-8'><title>{html.escape(out.name)}</title>"
            f"<h1>{html.escape(str(out))}</h1><p>{len(names)} layouts; grid: <a href='grid.png'>grid.png</a> "
            f"(label | real | styles)</p><table><tr>{head}</tr>{''.join(body)}</table>\n")
    write_text_atomic(out / "index.html", page)


def main(argv=None) -> int:
    opt = build_parser().parse_args(argv)
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    return run_command(lambda: run(opt, log) and 0)


if __name__ == "__main__":
    sys.exit(main())
