"""Reading and writing images, label maps and instance maps (Pillow), one rule per map kind.

Images (:func:`read_image`): any file Pillow reads (PNG, JPEG, BMP, WebP, ...),
converted to RGB ``uint8 [H, W, 3]`` (greyscale replicated, palette expanded,
alpha dropped).

Label and instance maps (:func:`read_index_map`, :func:`read_label_map`) follow
one rule, the same in training, preparation and ``inade-synth``:

* greyscale, 8-, 16- or 32-bit (Cityscapes' ``*_instanceIds.png`` is 16-bit):
  the pixel values;
* palette: the palette indices (not the colours), as the public code reads
  palette label maps;
* greyscale + alpha, RGB, RGBA: the first channel (alpha is ignored). This is
  the public code's only convention for a multi-channel map (DeepFashion's label
  maps are the first channel of its RGB masks) and it reads a greyscale map that
  was saved as RGB. A file whose other channels tell apart pixels with the same
  first channel is a colour-coded map (e.g. a 24-bit id in R, G, B): taking the
  first channel would merge its ids, so it is refused, naming the file; convert
  it to one id per pixel first.

Every read error names the file and is a :class:`DatasetError` (a
:class:`inade.utils.errors.UserError` and a ``ValueError``). Every write goes
through :func:`inade.utils.files.atomic_path`. The rule and the reasons for it:
``docs/FILES.md``.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from inade.utils.errors import UserError
from inade.utils.files import atomic_path

# Pillow modes whose pixels are ids as they are (one channel of integers).
_SINGLE_CHANNEL_MODES = ("1", "L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N")
# Multi-channel modes read as their first channel; the alpha channel is not checked.
_FIRST_CHANNEL_MODES = {"LA": 1, "La": 1, "PA": 1, "RGB": 3, "RGBA": 3, "RGBa": 3, "RGBX": 3}


class DatasetError(UserError, ValueError):
    """A dataset file or folder is missing, unreadable or inconsistent (the message names it)."""


@contextlib.contextmanager
def _opened(path, what: str):
    """``Image.open(path)`` with every failure turned into a :class:`DatasetError` naming the file."""
    try:
        with Image.open(path) as img:
            yield img
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file ({what})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:  # Pillow's errors for bad files
        if isinstance(err, DatasetError):
            raise
        raise DatasetError(f"{path}: cannot read it as {what} ({err})") from err


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An RGB image ``[H, W, 3]`` uint8 from any file Pillow reads (PNG, JPEG, ...)."""
    with _opened(path, "an image") as img:
        return np.asarray(img.convert("RGB"))


def read_index_map(path: str | os.PathLike) -> np.ndarray:
    """An integer map ``[H, W]`` int64 (label or raw instance ids) by the module's rule.

    Raises:
        DatasetError: no such file, not an image, float values, or a colour-coded RGB map.
    """
    with _opened(path, "a label/instance map") as img:
        mode = img.mode
        arr = np.asarray(img)
    if mode in _FIRST_CHANNEL_MODES:
        colour = arr[..., : _FIRST_CHANNEL_MODES[mode]]
        _check_first_channel_decides(colour, path)
        arr = colour[..., 0]
    elif mode not in _SINGLE_CHANNEL_MODES:
        raise DatasetError(f"{path}: a label/instance map must hold integer ids (greyscale, palette or RGB), "
                           f"got Pillow mode {mode!r}")
    return arr.astype(np.int64)


def _check_first_channel_decides(colour: np.ndarray, path) -> None:
    """Refuse an RGB map whose G or B channel separates pixels that share an R value."""
    if colour.shape[-1] == 1:
        return
    packed = colour.astype(np.int64)
    key = (packed[..., 0] << 16) | (packed[..., 1] << 8) | packed[..., 2]
    colours = np.unique(key)
    firsts = np.unique(colours >> 16)
    if len(firsts) != len(colours):
        raise DatasetError(
            f"{path}: an RGB map is read as its first channel, but this one has {len(colours)} colours and only "
            f"{len(firsts)} first-channel values (a colour-coded map): save one integer id per pixel "
            "(8- or 16-bit greyscale) instead"
        )


def labels_to_classes(stored: np.ndarray, path, *, label_nc: int, contain_dontcare_label: bool = False,
                      shift_labels: bool = False) -> np.ndarray:
    """Stored label values ``[H, W]`` -> classes ``0 … label_nc`` (``label_nc`` = don't-care), as the public code.

    Value 255 is the don't-care class ``label_nc``; with ``shift_labels`` (ADE20K) class ``k``
    is stored as ``k + 1`` and 0 is don't-care. Raises :class:`DatasetError` naming
    ``path`` for a class outside ``0 … label_nc - 1`` (``… label_nc`` with ``contain_dontcare_label``).
    """
    label = np.array(stored, dtype=np.int64)
    if shift_labels:
        label -= 1
        label[label < 0] = label_nc
    else:
        label[label == 255] = label_nc
    top = label_nc + (1 if contain_dontcare_label else 0)
    if label.size and (label.min() < 0 or label.max() >= top):
        bad = int(label.max()) if label.max() >= top else int(label.min())
        raise DatasetError(
            f"label map {path} has class {bad}, outside 0 ... {top - 1} "
            f"(label_nc={label_nc}, contain_dontcare_label={contain_dontcare_label})"
        )
    return label


def read_label_map(path: str | os.PathLike, *, label_nc: int, contain_dontcare_label: bool = False,
                   shift_labels: bool = False) -> np.ndarray:
    """Classes ``[H, W]`` int64 of a label map file (:func:`read_index_map`, then :func:`labels_to_classes`)."""
    return labels_to_classes(read_index_map(path), path, label_nc=label_nc,
                             contain_dontcare_label=contain_dontcare_label, shift_labels=shift_labels)


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


def _format_of(path: Path) -> str:
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"{path}: cannot tell the image format from the extension (use .png or .jpg)")
    return fmt


def write_image(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write an RGB ``[H, W, 3]`` uint8 image atomically, in the format of ``path``'s extension
    (JPEG at quality 95); returns ``path``."""
    path = Path(path)
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"an image to write must be uint8 [H, W, 3], got {rgb.dtype} {tuple(rgb.shape)}")
    fmt = _format_of(path)
    options = {"quality": 95} if fmt == "JPEG" else {}
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format=fmt, **options)
    return path


def write_index_map(path: str | os.PathLike, ids: np.ndarray) -> Path:
    """Write an integer map ``[H, W]`` as a greyscale PNG, atomically: 8-bit when every id is
    below 256, else 16-bit; returns ``path``."""
    path = Path(path)
    ids = np.asarray(ids)
    lo, hi = (int(ids.min()), int(ids.max())) if ids.size else (0, 0)
    if lo < 0 or hi >= 65536:
        raise ValueError(f"cannot write ids {lo} ... {hi} to {path}: a PNG index map holds 0 ... 65535")
    with atomic_path(path) as tmp:
        Image.fromarray(ids.astype(np.uint8 if hi < 256 else np.uint16)).save(tmp, format="PNG")
    return path


# ---------------------------------------------------------------------------
# Images as network tensors
# ---------------------------------------------------------------------------


def image_to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """``[H, W, 3]`` uint8 -> ``[3, H, W]`` float32 in ``[-1, 1]``."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(rgb).transpose(2, 0, 1))).float().div_(127.5).sub_(1.0)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` in ``[-1, 1]`` -> ``[H, W, 3]`` uint8 (rounded, clamped)."""
    return ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
