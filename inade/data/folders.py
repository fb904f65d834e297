"""Loaders for real datasets in the layouts the authors' public code reads.

=============  ==================================================================
dataset_mode   layout under ``dataroot`` (``<p>`` is the split)
=============  ==================================================================
cityscapes     ``gtFine/<p>/<city>/*_gtFine_labelIds.png`` and ``*_instanceIds.png``
               (raw ids such as 26001; ``*_instanceReIds.png`` is used when the raw
               ones are absent), ``leftImg8bit/<p>/<city>/*_leftImg8bit.png``;
               ``<p>`` is ``train`` or ``val``
ade20k         ``images/<p>/*.jpg``, ``annotations/<p>/*.png`` (``<p>`` is ``training``
               or ``validation``); class 0 is don't-care; no instances
celeba         CelebAMask-HQ with merged label maps: ``<p>/images/*.jpg``,
               ``<p>/labels/*.png``, optional ``<p>/instances/*.png`` (``<p>`` is
               ``train`` or ``test``), or ``<p>_img/``, ``<p>_label/``, optional ``<p>_inst/``
deepfashion    ``<p>_img/``, ``<p>_label/``, optional ``<p>_inst/`` (``train`` / ``test``)
coco           COCO-Stuff: ``<p>_img/``, ``<p>_label/``, ``<p>_inst/`` (``train`` / ``val``)
folder         ``[<p>/]images/``, ``[<p>/]labels/``, optional ``[<p>/]instances/``
custom         the public code's: ``--label_dir``, ``--image_dir``, optional ``--instance_dir``
               (:class:`CustomFolders`, the same for every split), or the folder layout
               under ``--dataroot``
=============  ==================================================================

Images and maps are paired by file name (Cityscapes by ``city_seq_frame``). Label
value 255 becomes the don't-care class ``label_nc`` (ADE20K: class 0, and every
other class moves down by one), as in the public code. Instance maps are made
compact per sample *after* resizing and cropping, one id per distinct raw id (an id
that spans classes stays one instance, as in the public code: a one-line note is printed
the first time a data set holds one, see docs/FILES.md); without an instance map the
label map is used (one instance per class present).
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from inade.data.ids import compact_ids, spanning_ids
from inade.data.images import DatasetError, read_image, read_index_map, read_label_map
from inade.data.transforms import apply_to_image, apply_to_index_map, plan_geometry

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class Sample:
    label: Path
    image: Path
    instance: Path | None
    sketch: Path | None = None  # edge map of the public code's --add_sketch (see attach_sketches)


class PairedDataset(torch.utils.data.Dataset):
    """Triples of (label map, image, optional instance map) files, preprocessed like the public code.

    ``dataset[i]`` (or ``dataset[(i, seed)]``, the seed driving crop and flip) is a dict:
    ``label [H, W] int64``, ``instance [H, W] int64`` (compact), ``image [3, H, W]``
    float32 in ``[-1, 1]``, ``index``, ``path``.

    Args:
        samples: the files.
        label_nc: classes without the don't-care class.
        contain_dontcare_label: map 255 (ADE20K: 0) to class ``label_nc``.
        shift_labels: ADE20K's convention: class ``k`` is stored as ``k + 1``, 0 is don't-care.
        size: ``(H, W)`` of the output (the generator's output size).
        load_size, preprocess_mode: how samples are scaled and cropped to ``size`` (see
            :func:`inade.data.transforms.plan_geometry`).
        flip: random horizontal flips.
    """

    def __init__(
        self,
        samples: list[Sample],
        *,
        label_nc: int,
        contain_dontcare_label: bool = False,
        shift_labels: bool = False,
        size: tuple[int, int] = (256, 256),
        load_size: int = 286,
        preprocess_mode: str = "resize_and_crop",
        flip: bool = True,
    ):
        if not samples:
            raise DatasetError("the dataset is empty")
        self.samples = samples
        self.label_nc, self.contain_dontcare_label, self.shift_labels = label_nc, contain_dontcare_label, shift_labels
        self.size, self.load_size = tuple(size), load_size
        self.preprocess_mode, self.flip = preprocess_mode, flip

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, index_seed(key))
        s = self.samples[index]
        # Sizes are checked from the headers before decoding: with preprocess_mode 'none' the
        # label map must already have the output size; the other maps must have the label map's.
        expect = (self.size, "the output size (preprocess_mode='none')") if self.preprocess_mode == "none" else (None, "")
        label = read_label_map(s.label, label_nc=self.label_nc, contain_dontcare_label=self.contain_dontcare_label,
                               shift_labels=self.shift_labels, size=expect[0], size_of=expect[1])
        beside = {"size": label.shape, "size_of": f"its label map {s.label}"}
        image = read_image(s.image, **beside)
        inst = read_index_map(s.instance, **beside) if s.instance is not None else None
        sketch = read_index_map(s.sketch, **beside) if s.sketch is not None else None
        g = plan_geometry(
            label.shape, self.preprocess_mode, self.size, self.load_size, self.flip,
            np.random.default_rng(seed),
        )
        label = apply_to_index_map(label, g)
        inst = label if inst is None else apply_to_index_map(inst, g)
        ids, raw = compact_ids(inst)
        if s.instance is not None:
            self._note_spanning_ids(s.instance, ids, raw, label)
        out = {
            "label": torch.from_numpy(label),
            "instance": torch.from_numpy(ids),
            "image": apply_to_image(image, g),
            "index": int(index),
            "path": str(s.image),
        }
        if sketch is not None:  # [1, H, W] float32 in [0, 1], resampled like the label (nearest)
            out["sketch"] = torch.from_numpy(apply_to_index_map(sketch, g)).float()[None] / 255
        return out

    def _note_spanning_ids(self, path: Path, ids: np.ndarray, raw: np.ndarray, label: np.ndarray) -> None:
        """One line on stderr the first time (per process) this data set holds an instance id
        that spans classes; then no more checks."""
        key = str(self.samples[0].label.parent)
        if key in _NOTED_DATASETS:
            return
        spans = spanning_ids(ids, label)
        if not spans:
            return
        _NOTED_DATASETS.add(key)
        i, classes = next(iter(spans.items()))
        print(f"note: {path}: instance id {int(raw[i])} covers classes {', '.join(map(str, classes))}: each raw id is "
              "one instance (one noise row, one encoder region) with each pixel's class parameters, as in the "
              "public code (docs/FILES.md)", file=sys.stderr, flush=True)


# Data sets (keyed by their first label map's folder) whose class-spanning ids were noted in this process.
_NOTED_DATASETS: set[str] = set()


def index_seed(index: int) -> int:
    """Augmentation seed of a sample fetched by plain index (no sampler seed)."""
    return int(index)


# ---------------------------------------------------------------------------
# Layouts
# ---------------------------------------------------------------------------


def natural_key(path: Path) -> list:
    """Sort key of ``path`` in natural order (``img2`` before ``img10``), the order in which the
    public code's data sets list their files (its ``util.natural_sort`` on the whole path): the
    samples of an epoch, and which images the first batches see, follow it."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def _files(folder: Path, suffixes=IMAGE_EXTENSIONS, recursive=False) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    found = (p for p in folder.glob(pattern) if p.is_file() and p.name.lower().endswith(tuple(suffixes)))
    return sorted(found, key=natural_key)


def _map_files(folder: Path) -> list[Path]:
    """The label or instance maps (PNG) in ``folder``; a JPEG there is refused (a lossy map has wrong ids)."""
    lossy = _files(folder, (".jpg", ".jpeg"))
    if lossy:
        raise DatasetError(f"{lossy[0]}: label and instance maps must be lossless (PNG): JPEG changes class ids "
                           "at edges; save the maps as PNG")
    return _files(folder, (".png",))


def _need_dir(folder: Path, what: str) -> Path:
    if not folder.is_dir():
        raise DatasetError(f"{what} folder not found: {folder}")
    return folder


def _pair_by_stem(labels: list[Path], images: list[Path], instances: list[Path] | None, key=lambda p: p.stem) -> list[Sample]:
    if not labels:
        raise DatasetError("no label maps found")
    by_key = {key(p): p for p in images}
    inst_by_key = {key(p): p for p in instances} if instances is not None else None
    samples = []
    for lab in labels:
        k = key(lab)
        if k not in by_key:
            raise DatasetError(f"no image for label map {lab} (looked for a file named {k}.* beside the other images)")
        inst = None
        if inst_by_key is not None:
            if k not in inst_by_key:
                raise DatasetError(f"no instance map for label map {lab} (looked for {k}.png)")
            inst = inst_by_key[k]
        samples.append(Sample(lab, by_key[k], inst))
    return samples


def cityscapes_files(root: Path, phase: str) -> list[Sample]:
    p = "val" if phase in ("test", "val") else "train"
    label_dir = _need_dir(root / "gtFine" / p, "Cityscapes label (gtFine/<split>)")
    image_dir = _need_dir(root / "leftImg8bit" / p, "Cityscapes image (leftImg8bit/<split>)")
    labels = sorted(label_dir.glob("*/*_labelIds.png"), key=natural_key)
    if not labels:
        raise DatasetError(f"no Cityscapes label maps (*_labelIds.png) under {label_dir}")
    key = lambda q: "_".join(q.name.split("_")[:3])  # noqa: E731
    samples = _pair_by_stem(labels, sorted(image_dir.glob("*/*.png"), key=natural_key), None, key)
    out = []
    for s in samples:
        stem = s.label.name[: -len("labelIds.png")]
        raw, reid = s.label.with_name(stem + "instanceIds.png"), s.label.with_name(stem + "instanceReIds.png")
        inst = raw if raw.exists() else reid if reid.exists() else None
        if inst is None:
            raise DatasetError(f"no instance map for {s.label}: expected {raw}")
        out.append(Sample(s.label, s.image, inst))
    return out


def ade20k_files(root: Path, phase: str) -> list[Sample]:
    p = "validation" if phase in ("test", "val") else "training"
    images = _files(_need_dir(root / "images" / p, "ADE20K image (images/<split>)"), (".jpg", ".jpeg"))
    labels = _map_files(_need_dir(root / "annotations" / p, "ADE20K annotation (annotations/<split>)"))
    return _pair_by_stem(labels, images, None)


def celeba_files(root: Path, phase: str) -> list[Sample]:
    p = "test" if phase in ("test", "val") else "train"
    if (root / p / "labels").is_dir():  # the INADE code's layout
        base = root / p
        inst_dir = base / "instances"
        return _pair_by_stem(
            _map_files(base / "labels"),
            _files(_need_dir(base / "images", "CelebAMask-HQ image (<split>/images)")),
            _map_files(inst_dir) if inst_dir.is_dir() else None,
        )
    for cand in ((p, "val") if p == "test" else (p,)):
        if (root / f"{cand}_label").is_dir():
            return _underscore_layout(root, cand, "CelebAMask-HQ")
    raise DatasetError(f"CelebAMask-HQ label folder not found: expected {root / p / 'labels'} or {root / (p + '_label')}")


def _underscore_layout(root: Path, p: str, name: str, need_inst: bool = False) -> list[Sample]:
    labels = _map_files(_need_dir(root / f"{p}_label", f"{name} label ({p}_label)"))
    images = _files(_need_dir(root / f"{p}_img", f"{name} image ({p}_img)"))
    inst_dir = root / f"{p}_inst"
    if need_inst:
        _need_dir(inst_dir, f"{name} instance ({p}_inst)")
    return _pair_by_stem(labels, images, _map_files(inst_dir) if inst_dir.is_dir() else None)


def deepfashion_files(root: Path, phase: str) -> list[Sample]:
    return _underscore_layout(root, "test" if phase in ("test", "val") else "train", "DeepFashion")


def coco_files(root: Path, phase: str) -> list[Sample]:
    return _underscore_layout(root, "val" if phase in ("test", "val") else "train", "COCO-Stuff", need_inst=True)


def folder_files(root: Path, phase: str) -> list[Sample]:
    base = root / phase if (root / phase / "labels").is_dir() else root
    inst_dir = base / "instances"
    return _pair_by_stem(
        _map_files(_need_dir(base / "labels", "label (labels/)")),
        _files(_need_dir(base / "images", "image (images/)")),
        _map_files(inst_dir) if inst_dir.is_dir() else None,
    )


@dataclass(frozen=True)
class CustomFolders:
    """The public code's custom data set (``--dataset_mode custom --label_dir L --image_dir I
    [--instance_dir N]``): three folders, the files paired by name (its pairing check)."""

    label_dir: str
    image_dir: str
    instance_dir: str = ""


def custom_files(folders: CustomFolders) -> list[Sample]:
    """The samples of :class:`CustomFolders` (the same folders for every phase, as the public code)."""
    inst_dir = Path(os.path.expanduser(folders.instance_dir)) if folders.instance_dir else None
    return _pair_by_stem(
        _map_files(_need_dir(Path(os.path.expanduser(folders.label_dir)), "--label_dir")),
        _files(_need_dir(Path(os.path.expanduser(folders.image_dir)), "--image_dir")),
        _map_files(_need_dir(inst_dir, "--instance_dir")) if inst_dir is not None else None,
    )


def data_root(options) -> str | CustomFolders | None:
    """What :func:`dataset_files` reads for ``options`` (a Namespace or a checkpoint's options dict):
    the public custom layout when ``label_dir`` is given, else ``dataroot``."""
    get = options.get if isinstance(options, dict) else (lambda key: getattr(options, key, None))
    if get("label_dir"):
        return CustomFolders(get("label_dir"), get("image_dir") or "", get("instance_dir") or "")
    return get("dataroot")


def data_root_fields(root: str | CustomFolders | None) -> dict:
    """``root`` as the plain fields :func:`data_root` reads back (for a JSON record)."""
    return dataclasses.asdict(root) if isinstance(root, CustomFolders) else {"dataroot": root}


LAYOUTS = {
    "cityscapes": cityscapes_files,
    "ade20k": ade20k_files,
    "celeba": celeba_files,
    "deepfashion": deepfashion_files,
    "coco": coco_files,
    "folder": folder_files,
    "custom": folder_files,  # with --dataroot; the public custom folders come as CustomFolders
}
# Conventions of each layout's label values.
SHIFT_LABELS = {"ade20k"}


def sketch_candidates(label: Path) -> list[Path]:
    """Where the public code's datasets keep the edge map of ``label`` (its ``--add_sketch``):
    Cityscapes ``*_edgeD.png`` beside ``*_labelIds.png``; ``<p>_edgeD/`` beside ``<p>_label/``
    (DeepFashion); an ``edgesD/`` folder beside ``labels/`` (CelebAMask-HQ) or beside
    ``annotations/`` with the split inside (ADE20K); ``sketches/`` beside ``labels/``."""
    name = label.stem + ".png"
    up, up2 = label.parent.parent, label.parent.parent.parent
    out = []
    if label.name.endswith("_labelIds.png"):
        out.append(label.with_name(label.name[: -len("labelIds.png")] + "edgeD.png"))
    if label.parent.name.endswith("_label"):
        out.append(up / (label.parent.name[: -len("_label")] + "_edgeD") / name)
    out += [up / d / name for d in ("edgesD", "edgeD", "sketches")]
    out += [up2 / d / label.parent.name / name for d in ("edgesD", "edgeD")]
    return out


def attach_sketches(samples: list[Sample]) -> list[Sample]:
    """``samples`` with their edge maps (greyscale PNGs, 0 … 255), found by :func:`sketch_candidates`.

    Raises:
        DatasetError: a label map without an edge map, naming the places looked at.
    """
    out = []
    for s in samples:
        tried = sketch_candidates(s.label)
        found = next((q for q in tried if q.is_file()), None)
        if found is None:
            raise DatasetError(f"no sketch (edge map) for label map {s.label} (--add_sketch); looked for "
                               + ", ".join(str(q) for q in tried[:4]))
        out.append(Sample(s.label, s.image, s.instance, found))
    return out


def dataset_files(dataset_mode: str, dataroot, phase: str = "train", add_sketch: bool = False) -> list[Sample]:
    """The (label, image, instance[, sketch]) files of ``dataset_mode`` under ``dataroot`` (or in
    the :class:`CustomFolders` of ``--dataset_mode custom``)."""
    if isinstance(dataroot, CustomFolders):
        samples = custom_files(dataroot)
        return attach_sketches(samples) if add_sketch else samples
    if dataset_mode not in LAYOUTS:
        raise ValueError(f"dataset_mode must be one of synthetic, {', '.join(LAYOUTS)}; got {dataset_mode!r}")
    root = Path(os.path.expanduser(str(dataroot)))
    if not root.is_dir():
        raise DatasetError(f"dataroot {root} is not a folder (dataset_mode={dataset_mode!r})")
    samples = LAYOUTS[dataset_mode](root, phase)
    return attach_sketches(samples) if add_sketch else samples
