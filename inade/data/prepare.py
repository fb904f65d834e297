"""Write compact instance maps for a dataset, and check that every file reads.

    python -m inade.data.prepare <dataroot> --dataset cityscapes [--phase train val]

Per dataset (the files the authors' public code expects, so both it and our
loaders can use them):

* ``cityscapes``: ``*_gtFine_instanceReIds.png`` beside each ``*_instanceIds.png``:
  raw ids such as 26001 numbered ``0 … L-1`` per image (one compact id per raw id).
* ``ade20k``: ``instances/<split>/*.png``, one instance per class present.
* ``celeba``: ``<split>/instances/*.png`` (or ``<split>_inst/``), likewise.
* ``deepfashion``: ``<split>_label/`` from the first channel of ``<split>_mask/``
  where only masks exist, then ``<split>_inst/``.
* ``coco``, ``folder``: nothing to write; files are only checked.

Maps are written 8-bit when ids fit, else 16-bit. Existing files are kept unless
``--overwrite``. The loaders compact ids again after cropping, so preparing is
optional for them; it is required by the public code.
"""
from __future__ import annotations

import sys
from pathlib import Path

from inade.config import LAYOUT_NAMES
from inade.utils.arguments import ArgumentParser
from inade.utils.errors import UserError, run_command
from inade.utils.files import output_errors

PHASES = ("train", "val", "test")
DEFAULT_PHASES = {"cityscapes": ("train", "val"), "ade20k": ("train", "val"), "coco": ("train", "val")}


def instance_target(dataset: str, root: Path, label: Path, phase: str) -> Path | None:
    """Where the compact instance map of ``label`` goes (None: nothing to write)."""
    if dataset == "cityscapes":
        return label.with_name(label.name.replace("_labelIds.png", "_instanceReIds.png"))
    if dataset == "ade20k":
        return root / "instances" / label.parent.name / label.name
    if dataset == "celeba":
        if label.parent.name == "labels":
            return label.parent.parent / "instances" / label.name
        return label.parent.with_name(label.parent.name.replace("_label", "_inst")) / label.name
    if dataset == "deepfashion":
        return label.parent.with_name(label.parent.name.replace("_label", "_inst")) / label.name
    return None


def _deepfashion_labels_from_masks(root: Path, phase: str, overwrite: bool) -> int:
    """The public code's step: ``<p>_label/x.png`` = channel 0 of ``<p>_mask/x.png``."""
    from inade.data.images import read_index_map, write_index_map  # noqa: PLC0415 - torch, after parsing

    p = "test" if phase in ("test", "val") else "train"
    masks, labels = root / f"{p}_mask", root / f"{p}_label"
    if not masks.is_dir():
        return 0
    with output_errors(labels, "the label folder"):
        labels.mkdir(exist_ok=True)
    n = 0
    for m in sorted(masks.glob("*.png")):
        out = labels / m.name
        if overwrite or not out.exists():
            write_index_map(out, read_index_map(m))
            n += 1
    return n


def prepare(dataset: str, root, phases=None, overwrite: bool = False, log=print) -> int:
    """Check every file of ``dataset`` under ``root`` and write compact instance maps.

    Returns the number of files written. Raises :class:`DatasetError` naming the
    first missing or unreadable file.
    """
    from inade.data.folders import dataset_files  # noqa: PLC0415 - torch, after parsing
    from inade.data.ids import compact_ids  # noqa: PLC0415
    from inade.data.images import read_image, read_index_map, write_index_map  # noqa: PLC0415

    root = Path(root)
    written = 0
    phases = phases or DEFAULT_PHASES.get(dataset, ("train", "test"))
    if dataset not in LAYOUT_NAMES or not set(phases) <= set(PHASES):
        raise UserError(f"prepare: --dataset must be one of {', '.join(sorted(LAYOUT_NAMES))} and --phase among "
                        f"{', '.join(PHASES)}; got {dataset!r}, {list(phases)}")
    for phase in phases:
        if dataset == "deepfashion":
            written += _deepfashion_labels_from_masks(root, phase, overwrite)
        samples = dataset_files(dataset, root, phase)
        for i, s in enumerate(samples):
            label = read_index_map(s.label)
            beside = {"size": label.shape, "size_of": f"its label map {s.label}"}
            read_image(s.image, **beside)
            target = instance_target(dataset, root, s.label, phase)
            raw = read_index_map(s.instance, **beside) if s.instance is not None else None
            if s.instance == target:
                raw = None  # the layout already holds the compact map (rewritten from labels with --overwrite)
            writable = target is not None and not (dataset == "cityscapes" and raw is None)
            if writable and (overwrite or not target.exists()):
                ids, _ = compact_ids(label if raw is None else raw)
                write_index_map(target, ids)
                written += 1
            if (i + 1) % 500 == 0:
                log(f"{dataset} {phase}: {i + 1}/{len(samples)}")
        log(f"{dataset} {phase}: {len(samples)} samples checked")
    log(f"wrote {written} files")
    return written


def main(argv=None) -> int:
    """``python -m inade.data.prepare``: 0 on success; a missing or unreadable file prints one
    line ``error: …`` and returns 2."""
    parser = ArgumentParser(prog="python -m inade.data.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("dataroot", help="the dataset's folder")
    parser.add_argument("--dataset", "--dataset_mode", dest="dataset", required=True, choices=sorted(LAYOUT_NAMES))
    parser.add_argument("--phase", nargs="+", default=None, choices=PHASES, help="splits to process (default: both)")
    parser.add_argument("--overwrite", action="store_true", help="rewrite existing instance maps")

    def _main() -> int:
        args = parser.parse_args(argv)
        prepare(args.dataset, args.dataroot, args.phase, args.overwrite)
        return 0

    return run_command(_main)  # a user error, Ctrl-C or SIGTERM: one line (exit 2, 130, 143)


if __name__ == "__main__":
    sys.exit(main())
