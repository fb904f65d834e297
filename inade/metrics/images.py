"""Image folders for the metrics: listing, reading, and batching without dropping any image."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from inade.data import DatasetError, read_image
from inade.data.images import image_size
from inade.metrics.weights import MetricsError

# pytorch-fid's list (its IMAGE_EXTENSIONS), lower case.
IMAGE_EXTENSIONS = (".bmp", ".jpg", ".jpeg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")


def list_images(folder: str | Path) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name; :class:`MetricsError` if none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MetricsError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise MetricsError(f"{folder}: empty folder (no {', '.join(e[1:] for e in IMAGE_EXTENSIONS[:5])} ... images)")
    return files


def load_image(path: str | Path, *, size: tuple[int, int] | None = None, size_of: str = "") -> np.ndarray:
    """RGB ``[H, W, 3]`` uint8 (a greyscale file is repeated to 3 channels); :class:`MetricsError` naming the file.

    ``size`` ``(H, W)``: the size it must have; without it, at most ``inade.data.images.MAX_PIXELS``
    pixels. Both are checked from the header, before decoding.
    """
    try:
        return read_image(path, size=size, size_of=size_of)
    except DatasetError as e:
        raise MetricsError(str(e)) from None


def header_size(path: str | Path) -> tuple[int, int]:
    """``(H, W)`` of an image file from its header (not decoded); :class:`MetricsError` naming the file."""
    try:
        return image_size(path)
    except DatasetError as e:
        raise MetricsError(str(e)) from None


def to_unit_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> float32 ``[3, H, W]`` in ``[0, 1]`` (pytorch-fid's ``ToTensor``)."""
    return torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div_(255)


def batches(files: Sequence[Path], batch_size: int) -> Iterator[list[Path]]:
    """Consecutive batches of ``files``; the last one may be smaller (no image is dropped).

    The images of a batch are stacked, so every file must have the first one's size: each
    file's header is checked as its batch is reached, before it is decoded
    (:class:`MetricsError` naming both files otherwise).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    first = None
    for i in range(0, len(files), batch_size):
        batch = list(files[i:i + batch_size])
        for p in batch:
            size = header_size(p)
            first = first or (p, size)
            if size != first[1]:
                raise MetricsError(f"{p}: image is {size[0]}x{size[1]} (HxW) but {first[0]}, the first image, is "
                                   f"{first[1][0]}x{first[1][1]}: the images of one folder must have one size")
        yield batch


def check_same_sizes(a: Sequence[Path], b: Sequence[Path]) -> None:
    """:class:`MetricsError` when the first images of two folders differ in size (real vs fake)."""
    sa, sb = header_size(a[0])[::-1], header_size(b[0])[::-1]
    if sa != sb:
        raise MetricsError(f"size mismatch: {a[0]} is {sa[0]}x{sa[1]} but {b[0]} is {sb[0]}x{sb[1]} "
                           "(real and fake images must have the same size; see --resize_size)")
