"""Data for INADE: the built-in synthetic scenes, loaders for the public datasets'
layouts, image and map files (:mod:`inade.data.images`: one reader per map kind,
with one rule for RGB, 16-bit and palette files), compact instance ids, and a
resumable distributed sampler.

``build_dataset(cfg, dataroot, phase)`` gives a dataset whose items are dicts with
``label [H, W] int64``, ``instance [H, W] int64`` (compact ids ``0 … L-1``, one per
raw id; an id may span classes, as in the public code), ``image [3, H, W] float32``
in ``[-1, 1]`` and ``index``. The default collate stacks them into the ``[B, H, W]`` /
``[B, 3, H, W]`` batches the model takes.
"""
from __future__ import annotations

import dataclasses
import importlib

# Imported when first used (PEP 562): ``python -m inade.data.prepare`` and the option parsers
# load no torch before their options are parsed.
_HOME = {
    **dict.fromkeys(("LAYOUTS", "SHIFT_LABELS", "PairedDataset", "dataset_files"), "folders"),
    **dict.fromkeys(("cityscapes_class", "compact_ids", "spanning_ids", "spans_classes"), "ids"),
    **dict.fromkeys(("EpochSampler", "augmentation_seed"), "sampler"),
    **dict.fromkeys(("CLASS_NAMES", "Scene", "SyntheticScenes"), "synthetic"),
    **dict.fromkeys(("MAX_PIXELS", "DatasetError", "image_size", "open_image", "read_image", "read_index_map",
                     "read_label_map", "write_image", "write_index_map"), "images"),
}


def __getattr__(name: str):
    if name == "DATASET_MODES":
        return ("synthetic",) + tuple(__getattr__("LAYOUTS"))
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)


ALIASES = {"celebamask-hq": "celeba", "cocostuff": "coco", "coco-stuff": "coco"}


def build_dataset(cfg, dataroot=None, phase: str = "train", *, synthetic_size: int = 1024, seed: int = 0, max_dataset_size: int | None = None):
    """The dataset ``cfg.dataset_mode`` preprocessed to ``cfg``'s output size.

    Args:
        cfg: an :class:`inade.config.Config` (uses ``dataset_mode``, ``label_nc``,
            ``contain_dontcare_label``, ``output_size`` (from ``crop_size``,
            ``aspect_ratio``, ``num_upsampling_layers``), ``load_size``,
            ``preprocess_mode``, ``no_flip``, ``no_instance``: instance files are
            then ignored and each class region is one instance).
        dataroot: the dataset's folder (unused for ``synthetic``).
        phase: ``train``, ``val`` or ``test``. Flips only in ``train``; outside it,
            ``resize_and_crop`` loads at the crop size (no random crop), like the public code.
        synthetic_size, seed: length and seed of the synthetic set.
        max_dataset_size: keep only the first files.
    """
    from inade.data.folders import SHIFT_LABELS, PairedDataset, dataset_files  # noqa: PLC0415
    from inade.data.synthetic import SyntheticScenes  # noqa: PLC0415

    mode = ALIASES.get(cfg.dataset_mode, cfg.dataset_mode)
    h, w = cfg.output_size
    if mode == "synthetic":
        return SyntheticScenes(synthetic_size, crop_size=w, aspect_ratio=w / h, seed=seed, phase=phase)
    if dataroot is None:
        raise ValueError(f"dataset_mode {cfg.dataset_mode!r} needs a dataroot (the dataset's folder)")
    files = dataset_files(mode, dataroot, phase, add_sketch=getattr(cfg, "add_sketch", False))[:max_dataset_size]
    if getattr(cfg, "no_instance", False):  # one instance per class present, as without instance files
        files = [dataclasses.replace(f, instance=None) for f in files]
    train = phase == "train"
    return PairedDataset(
        files,
        label_nc=cfg.label_nc,
        contain_dontcare_label=cfg.contain_dontcare_label,
        shift_labels=mode in SHIFT_LABELS,
        size=(h, w),
        load_size=cfg.load_size if train else w,
        preprocess_mode=cfg.preprocess_mode,
        flip=train and not cfg.no_flip,
    )


__all__ = [
    "CLASS_NAMES",
    "DATASET_MODES",
    "DatasetError",
    "EpochSampler",
    "MAX_PIXELS",
    "PairedDataset",
    "Scene",
    "SyntheticScenes",
    "augmentation_seed",
    "build_dataset",
    "cityscapes_class",
    "compact_ids",
    "dataset_files",
    "image_size",
    "open_image",
    "read_image",
    "read_index_map",
    "read_label_map",
    "spanning_ids",
    "spans_classes",
    "write_image",
    "write_index_map",
]
