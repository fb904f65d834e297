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

Writes ``<results_dir>/<name>/<phase>_<which_epoch>/`` (``test_best``, ``test_latest`` …), the
public code's layout (``util/visualizer.py``: ``images/<visual>/<stem>.png`` beside ``index.html``):

* ``images/synthesized_image/<stem>.png``: style 0 of each layout (what FID reads);
  ``images/synthesized_image_<k>/<stem>.png`` for styles ``k = 1 … N−1`` with ``--samples N``;
* ``images/real_image/<stem>.png`` (the test image at the model's size) and
  ``images/input_label/<stem>.png`` (the class ids as a greyscale PNG, which mIoU reads; the
  public code writes a colour picture there: ours is in the grid and the page);
* ``index.html`` (a table of the first layouts) and ``grid.png`` (label | real | styles);
* ``test_run.json``: the options, the checkpoint, the images/s, and every file of the folder
  with its size and SHA-256 (``python -m inade.metrics`` checks them, and ``all`` reads the
  rest to rebuild the generator for the resampling metrics).

A results folder is one run: the images are written into a fresh hidden folder beside it
(``.<phase>_<which_epoch>.<pid>.<random>.tmp``) and moved into place only when complete, replacing the
previous run's folder only when everything in it is that run's own (listed in its ``test_run.json``
with the same size and SHA-256); a file the test did not write stops it before any work, naming the
file (``--overwrite`` replaces it anyway and says what it removed). A failure, Ctrl-C or a kill leaves
the previous complete results; the next run removes the temporary folders of runs that died. One run
at a time writes a results folder: a second stops, naming the first's pid.

Options are the public code's (``options/base_options.py``, ``test_options.py``), with
``train.py``'s rule (:mod:`inade.training.options`): honoured where they mean something here,
a value asking for something not built refused, the others accepted with a note.

Style ``k`` of layout ``i`` is drawn from ``(seed, i, k)`` alone, so results do not depend
on ``--batchSize``. The networks run in eval mode (running batch statistics).
"""
from __future__ import annotations

import argparse
import contextlib
import html
import json
import math
import sys
import time
from pathlib import Path

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads after the options are parsed (each function that runs imports it)
    import numpy as np
    import torch

from inade.metrics import results
from inade.training.options import add_base_options, check_base_options
from inade.utils.arguments import ArgumentParser, at_least, count_or_all, folder_name
from inade.utils.cpu import thread_defaults
from inade.utils.errors import UserError, run_command
from inade.utils.files import write_text_atomic

MAX_PAGE_ROWS = 50
GRID_ROWS = 8


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m inade.test", description=__doc__.split("\n\n")[0])
    add_base_options(p, entry="test")
    g = p.add_argument_group("test (the public test_options.py, and ours)")
    g.add_argument("--results_dir", type=str, default="./results/", help="results go to <results_dir>/<name>/<phase>_<which_epoch>")
    g.add_argument("--which_epoch", type=folder_name, default="latest",  # part of the results folder's name
                   help="latest, best, or an epoch number")
    g.add_argument("--how_many", type=count_or_all, default=math.inf, help="how many test images to synthesise (default all)")
    g.add_argument("--checkpoint", type=str, default=None, help="a checkpoint file (overrides name / which_epoch)")
    g.add_argument("--config", type=str, default=None, help="preset for a public-code checkpoint (default: dataset_mode)")
    g.add_argument("--samples", type=at_least(1), default=1, help="styles per layout (the diversity metrics need >= 2)")
    g.add_argument("--no_progress", action="store_true")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the results folder even where it holds files this program did not write (they are removed)")
    return p


# Options of the public base parser that describe the model: a public-code checkpoint is
# built with them; ours holds its own configuration, and a different value is refused.
MODEL_OPTIONS = ("label_nc", "ngf", "z_dim", "noise_nc", "crop_size", "aspect_ratio", "num_upsampling_layers",
                 "contain_dontcare_label", "norm_G", "add_sketch")
# Options that change only how the test split is read (honoured for every checkpoint). --load_size
# is not one: outside training the loader reads at the model's size, as the public test's defaults
# (load_size = crop_size) do; IGNORED_BY["test"] notes it.
DATA_OPTIONS = ("preprocess_mode", "no_instance")


def parse_test_options(argv=None):
    """``(opt, notes)``: the options with the test's defaults filled in, notes on ignored ones.
    A bad option or value raises :class:`UserError` naming it."""
    opt = build_parser().parse_args(argv)
    notes = check_base_options(opt, "test")
    if opt.name is None:
        opt.name = "inade_synthetic"
    if opt.gpu_ids is None:
        opt.gpu_ids = "-1"
    if opt.batchSize is None:
        opt.batchSize = 1
    if opt.synthetic_size is None:
        opt.synthetic_size = 64
    opt.nThreads = opt.nThreads or 0
    opt.use_vae = bool(opt.use_vae)
    return opt, notes


def model_overrides(opt) -> dict:
    """The model options given on the command line (for a public-code checkpoint)."""
    return {k: getattr(opt, k) for k in MODEL_OPTIONS if getattr(opt, k, None) is not None}


def apply_options(cfg, opt, ours: bool):
    """``cfg`` with the data options of the command line; a model option that disagrees
    with our checkpoint's configuration is refused (a public-code one was built with them)."""
    if ours:
        for key, value in model_overrides(opt).items():
            if getattr(cfg, key) != value:
                given = f"--{key}" if value is True else f"--{key} {value}"
                raise UserError(f"{given} disagrees with the checkpoint, which was trained with "
                                f"{key}={getattr(cfg, key)!r} (our checkpoints hold their configuration: leave --{key} out)")
    data = {k: getattr(opt, k) for k in DATA_OPTIONS if getattr(opt, k, None) is not None}
    if opt.dataset_mode and opt.dataset_mode != cfg.dataset_mode:
        data["dataset_mode"] = opt.dataset_mode
    return cfg.replace(**data) if data else cfg


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
    preset = opt.config or (opt.dataset_mode if not ours else None)
    overrides = model_overrides(opt) if not ours else {}
    G, E, cfg = load_models(g_path, preset, overrides, e_path, device, saved=saved)
    del saved
    try:
        cfg = apply_options(cfg, opt, ours)
    except (TypeError, ValueError) as e:
        raise UserError(str(e)) from None
    if opt.use_vae and E is None:
        raise UserError(f"--use_vae: {g_path} holds no encoder")
    return G.eval(), (E.eval() if E is not None else None), cfg, options, g_path, e_path


# ---------------------------------------------------------------------------
# Synthesis
# ---------------------------------------------------------------------------


def synthesize(synth, batch, k: int, seed: int, E=None) -> torch.Tensor:
    """Style ``k`` of every layout of ``batch``: ``[B, 3, H, W]`` in ``[-1, 1]``."""
    import torch  # noqa: PLC0415 - after parsing (python -m inade.test --help needs none)

    from inade.training.latents import style_seed  # noqa: PLC0415

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


def _device(gpu_ids: str) -> torch.device:
    import torch  # noqa: PLC0415 - after parsing (python -m inade.test --help needs none)

    first = gpu_ids.split(",")[0].strip()
    if first in ("-1", ""):
        return torch.device("cpu")
    if not first.isdigit():
        raise UserError(f"--gpu_ids {gpu_ids!r}: expected GPU numbers such as 0 or 0,1, or -1 for the CPU")
    if not torch.cuda.is_available():
        return torch.device("cpu")
    if int(first) >= torch.cuda.device_count():
        raise UserError(f"--gpu_ids {gpu_ids}: this machine has {torch.cuda.device_count()} GPU(s)")
    return torch.device(f"cuda:{first}")


def run(opt, log=print) -> Path:
    """Synthesise the split into a fresh folder and move it into place; returns the output folder.
    One run at a time writes a results folder (a second one stops, naming this one)."""
    out = Path(opt.results_dir) / opt.name / f"{opt.phase}_{opt.which_epoch}"
    results.check_writable(out)
    with results.writer_lock(out):
        return _run(opt, log, out)


def _run(opt, log, out: Path) -> Path:
    import torch  # noqa: PLC0415 - after parsing (python -m inade.test --help needs none)

    import inade  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    from inade.data import build_dataset  # noqa: PLC0415
    from inade.data.folders import data_root, data_root_fields  # noqa: PLC0415
    from inade.training.trainer import _ignore_stop_signals, resolve_amp  # noqa: PLC0415

    device = _device(opt.gpu_ids)
    results.check_replaceable(out, overwrite=opt.overwrite)
    G, E, cfg, options, g_path, e_path = load_generator(opt, device)
    dataroot = data_root(opt) or data_root(options)  # --dataroot, or the custom data set's folders
    data_seed = int(options.get("seed", 0) or 0)
    try:
        data = build_dataset(cfg, dataroot, phase=opt.phase, synthetic_size=opt.synthetic_size, seed=data_seed,
                             max_dataset_size=opt.max_dataset_size)
    except ValueError as e:
        raise UserError(str(e)) from None
    n = int(min(len(data), opt.how_many, opt.max_dataset_size or math.inf))  # (the synthetic set has no files to cut)
    if n == 0:
        raise UserError(f"the {opt.phase} split of {cfg.dataset_mode} is empty")
    subset = torch.utils.data.Subset(data, range(n))
    loader = torch.utils.data.DataLoader(subset, batch_size=opt.batchSize, shuffle=False, num_workers=opt.nThreads,
                                         worker_init_fn=_ignore_stop_signals)  # the main process stops them
    amp = resolve_amp("auto" if opt.use_amp else "none", device, log)  # float32, with a note, without CPU bf16
    synth = inade.Synthesizer(G, E, cfg)
    folders = ["synthesized_image"] + [f"synthesized_image_{k}" for k in range(1, opt.samples)]
    log(f"synthesising {n} {cfg.dataset_mode} {opt.phase} layouts x {opt.samples} style(s) with {g_path} -> {out}")
    removed = []
    with results.fresh_folder(out, overwrite=opt.overwrite, removed=removed) as tmp:
        start = time.perf_counter()
        with tqdm(total=n * opt.samples, desc="test", unit="img", disable=opt.no_progress or not sys.stderr.isatty()) as bar:
            names, rows = _write_images(tmp, loader, synth, E if opt.use_vae else None, folders, opt, amp, cfg, bar)
        seconds = time.perf_counter() - start
        done = len(names) * opt.samples
        rate = done / seconds if seconds > 0 else float("inf")
        _write_index(tmp, out, names, folders, rows)
        meta = {
            "checkpoint": str(g_path), "encoder": str(e_path) if e_path else None, "step": options.get("_step"),
            "name": opt.name,
            "which_epoch": opt.which_epoch, "phase": opt.phase, "dataset_mode": cfg.dataset_mode, **data_root_fields(dataroot),
            "synthetic_size": opt.synthetic_size, "data_seed": data_seed,
            "config": cfg.to_dict(), "samples": opt.samples, "seed": opt.seed, "use_vae": opt.use_vae,
            "use_amp": opt.use_amp, "images": done, "layouts": n, "seconds": seconds, "images_per_second": rate,
            "device": str(device),
        }
        results.write_manifest(tmp, meta)
    if removed:
        shown = ", ".join(str(p.relative_to(out)) for p in removed[:10]) + (" …" if len(removed) > 10 else "")
        log(f"--overwrite: removed {len(removed)} file(s) and folder(s) not written by python -m inade.test "
            f"from {out}: {shown}")
    log(f"{done} images in {seconds:.1f} s: {rate:.2f} images/s -> {out}")
    return out


def _write_images(tmp: Path, loader, synth, E, folders, opt, amp, cfg, bar):
    """Every style of every layout, the real image and the label, into ``tmp/images``;
    returns ``(stems, grid rows)``."""
    import torch  # noqa: PLC0415 - after parsing (python -m inade.test --help needs none)

    from inade.data import write_image, write_index_map  # noqa: PLC0415
    from inade.data.images import to_uint8  # noqa: PLC0415

    images = tmp / results.IMAGES
    rows, names = [], []
    autocast = torch.autocast(synth._like.device.type, dtype=amp) if amp is not None else contextlib.nullcontext()
    for batch in loader:
        names_b = stems(batch)
        styles = []
        for k in range(opt.samples):
            with autocast:
                img = synthesize(synth, batch, k, opt.seed, E).float()
            styles.append(img)
            for b, stem in enumerate(names_b):
                write_image(images / folders[k] / f"{stem}.png", to_uint8(img[b]))
            bar.update(len(names_b))
        for b, stem in enumerate(names_b):
            write_image(images / "real_image" / f"{stem}.png", to_uint8(batch["image"][b]))
            write_index_map(images / "input_label" / f"{stem}.png", batch["label"][b].numpy())
            if len(rows) < GRID_ROWS:
                rows.append(_grid_row(batch, b, styles, cfg))
            names.append(stem)
    return names, rows


def _grid_row(batch, b, styles, cfg) -> list[np.ndarray]:
    from inade.data.images import to_uint8  # noqa: PLC0415
    from inade.training.grids import colorize  # noqa: PLC0415

    return [colorize(batch["label"][b], cfg.num_classes), to_uint8(batch["image"][b])] + [to_uint8(s[b]) for s in styles[:6]]


def _write_index(out: Path, final: Path, names: list[str], folders: list[str], rows) -> None:
    from inade.data import write_image  # noqa: PLC0415
    from inade.training.grids import assemble  # noqa: PLC0415

    if rows:
        write_image(out / "grid.png", assemble(rows))
    cols = ["real_image"] + folders[:6]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["name"] + cols)
    body = []
    for stem in names[:MAX_PAGE_ROWS]:
        cells = "".join(f'<td><img src="{results.IMAGES}/{c}/{html.escape(stem)}.png" width="192"></td>' for c in cols)
        body.append(f"<tr><td>{html.escape(stem)}</td>{cells}</tr>")
    page = (f"<!doctype html><meta charset='utf-8'><title>{html.escape(final.name)}</title>"
            f"<h1>{html.escape(str(final))}</h1><p>{len(names)} layouts; grid: <a href='grid.png'>grid.png</a> "
            f"(label | real | styles)</p><table><tr>{head}</tr>{''.join(body)}</table>\n")
    write_text_atomic(out / "index.html", page)


def main(argv=None) -> int:
    thread_defaults()  # OMP_WAIT_POLICY=PASSIVE unless set: before torch loads OpenMP (inade.utils.cpu)
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731

    def _main():
        opt, notes = parse_test_options(argv)
        for line in notes:
            log(f"note: {line}")
        run(opt, log)
        return 0

    return run_command(_main)


if __name__ == "__main__":
    sys.exit(main())
