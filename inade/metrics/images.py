"""Image folders for the metrics: listing, reading, and batching without dropping any image."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from inade.data import DatasetError, read_image
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


def load_image(path: str | Path) -> np.ndarray:
    """RGB ``[H, W, 3]`` uint8 (a greyscale file is repeated to 3 channels); :class:`MetricsError` naming the file."""
    try:
        return read_image(path)
    except DatasetError as e:
        raise MetricsError(str(e)) from None


def to_unit_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> float32 ``[3, H, W]`` in ``[0, 1]`` (pytorch-fid's ``ToTensor``)."""
    return torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div_(255)


def batches(files: Sequence[Path], batch_size: int) -> Iterator[list[Path]]:
    """Consecutive batches of ``files``; the last one may be smaller (no image is dropped)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for i in range(0, len(files), batch_size):
        yield list(files[i:i + batch_size])


def check_same_sizes(a: Sequence[Path], b: Sequence[Path]) -> None:
    """:class:`MetricsError` when the first images of two folders differ in size (real vs fake)."""
    from PIL import Image  # noqa: PLC0415

    def size(p):
        try:
            with Image.open(p) as im:
                return im.size
        except Exception as e:  # noqa: BLE001
            raise MetricsError(f"cannot read image {p}: {e}") from None

    sa, sb = size(a[0]), size(b[0])
    if sa != sb:
        raise MetricsError(f"size mismatch: {a[0]} is {sa[0]}x{sa[1]} but {b[0]} is {sb[0]}x{sb[1]} "
                           "(real and fake images must have the same size; see --resize_size)")
