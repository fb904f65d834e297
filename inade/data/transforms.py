"""Reading, resizing and cropping of image / label / instance triples.

Images are resized with bicubic filtering; label and instance maps with nearest
(pixel centres, as PIL's ``NEAREST``), so ids are never blended. One random crop
and one flip decision apply to all three maps of a sample. Randomness comes from
an explicit seed, so a sample's augmentation is reproducible (exact resume).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

PREPROCESS_MODES = (
    "none",
    "fixed",
    "resize_and_crop",
    "crop",
    "scale_width",
    "scale_width_and_crop",
    "scale_shortside",
    "scale_shortside_and_crop",
)


class DatasetError(ValueError):
    """A dataset file or folder is missing, unreadable or inconsistent (the message names it)."""


def _pil():
    try:
        from PIL import Image  # noqa: PLC0415
    except ImportError as e:  # pragma: no cover - pillow is an install requirement
        raise ImportError("reading dataset images needs Pillow: pip install pillow") from e
    return Image


def read_image(path) -> np.ndarray:
    """RGB image ``[H, W, 3]`` uint8."""
    Image = _pil()
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except FileNotFoundError:
        raise DatasetError(f"image file not found: {path}") from None
    except Exception as e:  # PIL raises several types for a corrupt file
        raise DatasetError(f"cannot read image {path}: {e}") from e


def read_index_map(path) -> np.ndarray:
    """Integer map ``[H, W]`` int64 from a PNG (8-, 16- or 32-bit; an RGB map's first channel)."""
    Image = _pil()
    try:
        with Image.open(path) as img:
            arr = np.asarray(img)
    except FileNotFoundError:
        raise DatasetError(f"label/instance file not found: {path}") from None
    except Exception as e:
        raise DatasetError(f"cannot read label/instance map {path}: {e}") from e
    if arr.ndim == 3:
        arr = arr[..., 0]
    if not np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.bool_:
        raise DatasetError(f"{path} holds {arr.dtype} values: label and instance maps must be integer PNGs")
    return arr.astype(np.int64)


def write_index_map(path, ids: np.ndarray) -> None:
    """Write an integer map as PNG: 8-bit when every id is below 256, else 16-bit."""
    Image = _pil()
    ids = np.asarray(ids)
    lo, hi = (int(ids.min()), int(ids.max())) if ids.size else (0, 0)
    if lo < 0 or hi >= 65536:
        raise ValueError(f"cannot write ids {lo} ... {hi} to {path}: a PNG index map holds 0 ... 65535")
    Image.fromarray(ids.astype(np.uint8 if hi < 256 else np.uint16)).save(path)


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
    elif mode.startswith("scale_width"):
        w = max(out_w, load_size if mode.endswith("crop") else crop_size)
        resize = (max(out_h, round(H * w / W)), w)
    else:  # scale_shortside[_and_crop]
        side = max(out_h, out_w, load_size if mode.endswith("crop") else crop_size)
        scale = side / min(H, W)
        resize = (max(out_h, round(H * scale)), max(out_w, round(W * scale)))
    if resize[0] < out_h or resize[1] < out_w:
        raise DatasetError(f"a {H}x{W} sample is smaller than the {out_h}x{out_w} crop (preprocess_mode={mode!r})")
    top = int(rng.integers(0, resize[0] - out_h + 1))
    left = int(rng.integers(0, resize[1] - out_w + 1))
    return Geometry(resize=resize, crop=(top, left, out_h, out_w), flip=bool(flip and rng.random() < 0.5))


def apply_to_image(img: np.ndarray, g: Geometry) -> torch.Tensor:
    """``[H, W, 3]`` uint8 → ``[3, h, w]`` float32 in ``[-1, 1]`` (bicubic resize)."""
    if img.shape[:2] != g.resize:
        Image = _pil()
        img = np.asarray(Image.fromarray(img).resize((g.resize[1], g.resize[0]), Image.BICUBIC))
    img = _crop_flip(img, g)
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(127.5).sub_(1.0)


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
