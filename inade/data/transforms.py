"""Resizing and cropping of image / label / instance triples (files are read by :mod:`inade.data.images`).

Images are resized with bicubic filtering; label and instance maps with nearest
(pixel centres, as PIL's ``NEAREST``), so ids are never blended. One random crop
and one flip decision apply to all three maps of a sample. Randomness comes from
an explicit seed, so a sample's augmentation is reproducible (exact resume).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from inade.config import PREPROCESS_MODES  # the one list (torch-free: the option parsers read it)
from inade.data.images import DatasetError, image_to_tensor


@dataclass(frozen=True)
class Geometry:
    """Where a sample's maps are resized to and cropped from (shared by image, label, instance)."""

    resize: tuple[int, int]  # (h, w) after resizing
    crop: tuple[int, int, int, int]  # (top, left, h, w)
    flip: bool


def plan_geometry(
    size: tuple[int, int],
    mode: str,
    out_size: tuple[int, int],
    load_size: int,
    flip: bool,
    rng: np.random.Generator,
) -> Geometry:
    """The resize, crop and flip of a sample of ``size = (H, W)`` (public code's preprocess modes).

    Args:
        out_size: ``(h, w)`` of the result, the generator's output size (every mode
            except ``none``, which keeps the sample's size).
        load_size: width (``resize_and_crop``: width and height x aspect) the sample is
            scaled to before a random crop.
    """
    if mode not in PREPROCESS_MODES:
        raise ValueError(f"preprocess_mode must be one of {', '.join(PREPROCESS_MODES)}, got {mode!r}")
    H, W = size
    out_h, out_w = out_size
    crop_size, aspect_ratio = out_w, out_w / out_h
    if mode == "none":
        resize = (H, W)
        out_h, out_w = H, W
    elif mode == "fixed":
        resize = (out_h, out_w)
    elif mode == "resize_and_crop":
        resize = (max(out_h, round(load_size / aspect_ratio)), max(out_w, load_size))
    elif mode == "crop":
        resize = (H, W)
    elif mode.startswith("scale_width"):  # the long side rounded down, as the public code's int(w * H / W)
        w = max(out_w, load_size if mode.endswith("crop") else crop_size)
        resize = (max(out_h, int(w * H / W)), w)
    else:  # scale_shortside[_and_crop]: the short side to `side`, the long one int(side * long / short)
        side = max(out_h, out_w, load_size if mode.endswith("crop") else crop_size)
        long = int(side * max(H, W) / min(H, W))
        h, w = (long, side) if W <= H else (side, long)
        resize = (max(out_h, h), max(out_w, w))
    if resize[0] < out_h or resize[1] < out_w:
        raise DatasetError(f"a {H}x{W} sample is smaller than the {out_h}x{out_w} crop (preprocess_mode={mode!r})")
    top = int(rng.integers(0, resize[0] - out_h + 1))
    left = int(rng.integers(0, resize[1] - out_w + 1))
    return Geometry(resize=resize, crop=(top, left, out_h, out_w), flip=bool(flip and rng.random() < 0.5))


def apply_to_image(img: np.ndarray, g: Geometry) -> torch.Tensor:
    """``[H, W, 3]`` uint8 → ``[3, h, w]`` float32 in ``[-1, 1]`` (bicubic resize)."""
    if img.shape[:2] != g.resize:
        img = np.asarray(Image.fromarray(img).resize((g.resize[1], g.resize[0]), Image.BICUBIC))
    img = _crop_flip(img, g)
    return image_to_tensor(img)


def apply_to_index_map(ids: np.ndarray, g: Geometry) -> np.ndarray:
    """``[H, W]`` int map → ``[h, w]`` (nearest at pixel centres)."""
    H, W = ids.shape
    if (H, W) != g.resize:
        rows = np.minimum(((np.arange(g.resize[0]) + 0.5) * H / g.resize[0]).astype(np.int64), H - 1)
        cols = np.minimum(((np.arange(g.resize[1]) + 0.5) * W / g.resize[1]).astype(np.int64), W - 1)
        ids = ids[rows[:, None], cols[None, :]]
    return np.ascontiguousarray(_crop_flip(ids, g))


def _crop_flip(a: np.ndarray, g: Geometry) -> np.ndarray:
    top, left, h, w = g.crop
    a = a[top : top + h, left : left + w]
    return a[:, ::-1] if g.flip else a
