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

Maps must be lossless: a JPEG, lossy WebP or JPEG-compressed TIFF map is refused
(its compression changes ids at edges).

Nothing is decoded before its header is checked (:func:`open_image`, the one guard of
every reader): against the size the caller expects (the model's output size, a
sample's label map), or, where none is expected, against :data:`MAX_PIXELS`; Pillow's
decompression-bomb error and warning become one error naming the file.

Every read error names the file and is a :class:`DatasetError` (a
:class:`inade.utils.errors.UserError` and a ``ValueError``). Every write goes
through :func:`inade.utils.files.atomic_path`; a file that cannot be written is an
:class:`inade.utils.files.OutputError` naming it. The rule and the reasons for it:
``docs/FILES.md``.
"""
from __future__ import annotations

import contextlib
import os
import re
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from inade.utils.errors import UserError
from inade.utils.files import atomic_path, output_errors

# Pillow modes whose pixels are ids as they are (one channel of integers).
_SINGLE_CHANNEL_MODES = ("1", "L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N")
# Multi-channel modes read as their first channel; the alpha channel is not checked.
_FIRST_CHANNEL_MODES = {"LA": 1, "La": 1, "PA": 1, "RGB": 3, "RGBA": 3, "RGBa": 3, "RGBX": 3}


class DatasetError(UserError, ValueError):
    """A dataset file or folder is missing, unreadable or inconsistent (the message names it)."""


MAX_PIXELS = 4096 * 4096
"""Largest image or map (width x height) read where no size is expected (reference images,
data sets, metrics' folders, the first map of a sample).

Why a cap: the size is in the file's header, and a PNG of one colour compresses about
a thousand to one (a 6000x6000 map is a 100 KB file), so a small file can ask for
gigabytes once decoded (a map becomes ``int64`` ids, 8 bytes a pixel, plus copies).
Pillow's own guard (``Image.MAX_IMAGE_PIXELS``, 89 M pixels) is set for photographs and
only warns below 179 M pixels. 4096x4096 (16.8 M pixels, about 130 MB as ids) is four
times the largest file of the supported data sets (Cityscapes, 2048x1024) and is refused
before anything is decoded; where a size is expected (the model's output size, a
sample's label map) the header must match it exactly.
"""

# warnings.catch_warnings swaps the process-wide filter list: two threads opening images at
# once (the Studio answers from worker threads) could restore each other's filters.
_WARNINGS_LOCK = threading.Lock()

# Formats whose compression changes pixel values; a map in one of them has wrong ids at edges.
_LOSSY_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "JPEG2000": "JPEG 2000"}


def _lossy_format(img: Image.Image) -> str | None:
    """The name of ``img``'s lossy compression, or None for a lossless file (read from the header)."""
    if img.format in _LOSSY_FORMATS:
        return _LOSSY_FORMATS[img.format]
    if img.format == "TIFF" and str(img.info.get("compression", "")).startswith("jpeg"):
        return "JPEG-compressed TIFF"
    if img.format == "WEBP" and _webp_is_lossy(img):
        return "lossy WebP"
    return None


def _webp_is_lossy(img: Image.Image) -> bool:
    """A WebP file's first image chunk is ``VP8 `` (lossy) rather than ``VP8L`` (lossless)."""
    fp = getattr(img, "fp", None) or getattr(img, "_fp", None)
    name = getattr(img, "filename", "")
    try:
        if name:
            with open(name, "rb") as f:
                head = f.read(1 << 16)
        elif fp is not None and hasattr(fp, "seek"):
            pos = fp.tell()
            fp.seek(0)
            head = fp.read(1 << 16)
            fp.seek(pos)
        else:
            return False
    except (OSError, ValueError):
        return False
    at = 12
    while at + 8 <= len(head):
        kind, size = head[at:at + 4], int.from_bytes(head[at + 4:at + 8], "little")
        if kind in (b"VP8 ", b"VP8L"):
            return kind == b"VP8 "
        at += 8 + size + (size & 1)  # RIFF chunks are padded to an even size
    return False


@contextlib.contextmanager
def open_image(path, what: str, *, size: tuple[int, int] | None = None, size_of: str = "",
               lossless: bool = False, max_pixels: int = MAX_PIXELS):
    """``Image.open(path)`` checked from the header alone, before anything is decoded.

    Yields the opened image; the caller decodes it (``np.asarray``, ``convert``). Raises
    :class:`DatasetError` naming the file for: no such file, not an image, a decompression
    bomb (Pillow's error or warning), a size other than ``size`` (``(H, W)``, described by
    ``size_of``) or, without ``size``, more than ``max_pixels`` pixels, and with ``lossless``
    a lossy format (JPEG, lossy WebP, ...). The one guard of every reader of images and maps.
    """
    try:
        with _WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file ({what})") from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: is a folder, not a file ({what})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DatasetError(f"{path}: refused to decode it as {what}: the header says {_header_size(err)}, "
                           f"more than the {_pixels(max_pixels)} allowed (a decompression bomb?)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:  # Pillow's errors for bad files
        raise DatasetError(f"{path}: cannot read it as {what} ({err})") from err
    with img:
        W, H = img.size
        lossy = _lossy_format(img) if lossless else None
        if lossy is not None:
            raise DatasetError(f"{path}: label and instance maps must be lossless (PNG): {lossy} changes "
                               "class ids at edges; save the map as PNG")
        if size is not None and (H, W) != tuple(size):
            raise DatasetError(f"{path}: {what} is {H}x{W} (HxW) but {size_of or 'the expected size'} "
                               f"is {size[0]}x{size[1]}")
        if size is None and W * H > max_pixels:
            raise DatasetError(f"{path}: {what} is {H}x{W} (HxW), {_pixels(W * H)}, more than the "
                               f"{_pixels(max_pixels)} read without an expected size (inade.data.images.MAX_PIXELS)")
        try:
            yield img
        except (OSError, SyntaxError, ValueError) as err:  # a header that parses over a broken body
            if isinstance(err, DatasetError):
                raise
            raise DatasetError(f"{path}: cannot read it as {what} ({err})") from err


def _pixels(n: int) -> str:
    return f"{n / 1e6:.1f} M pixels"


def _header_size(err: Exception) -> str:
    found = re.search(r"\((\d+) pixels\)", str(err))
    return _pixels(int(found.group(1))) if found else "a size too large to decode"


def image_size(path: str | os.PathLike, what: str = "an image", *, lossless: bool = False) -> tuple[int, int]:
    """``(H, W)`` of an image or map from its header alone (checked by :func:`open_image`)."""
    with open_image(path, what, lossless=lossless) as img:
        return img.size[1], img.size[0]


def read_image(path: str | os.PathLike, *, size: tuple[int, int] | None = None, size_of: str = "") -> np.ndarray:
    """An RGB image ``[H, W, 3]`` uint8 from any file Pillow reads (PNG, JPEG, ...).

    ``size``: the ``(H, W)`` it must have (``size_of`` says whose size that is); without
    it, at most :data:`MAX_PIXELS`. Both are checked before decoding (:func:`open_image`).
    """
    with open_image(path, "an image", size=size, size_of=size_of) as img:
        return np.asarray(img.convert("RGB"))


def read_index_map(path: str | os.PathLike, *, size: tuple[int, int] | None = None, size_of: str = "") -> np.ndarray:
    """An integer map ``[H, W]`` int64 (label or raw instance ids) by the module's rule.

    The file must be lossless (PNG, BMP, TIFF, lossless WebP, ...) and of ``size``
    (``(H, W)``; without it, at most :data:`MAX_PIXELS`), checked before decoding.

    Raises:
        DatasetError: no such file, not an image, a lossy file, another size, float values,
            a colour-coded RGB map, or a negative id (a 32-bit TIFF can hold one).
    """
    with open_image(path, "a label/instance map", size=size, size_of=size_of, lossless=True) as img:
        mode = img.mode
        arr = np.asarray(img)
    if mode in _FIRST_CHANNEL_MODES:
        colour = arr[..., : _FIRST_CHANNEL_MODES[mode]]
        _check_first_channel_decides(colour, path)
        arr = colour[..., 0]
    elif mode not in _SINGLE_CHANNEL_MODES:
        raise DatasetError(f"{path}: a label/instance map must hold integer ids (greyscale, palette or RGB), "
                           f"got Pillow mode {mode!r}")
    if arr.dtype.kind == "i" and arr.size and arr.min() < 0:  # a 32-bit TIFF (mode I) can hold -1 for "none"
        y, x = np.unravel_index(int(arr.argmin()), arr.shape)
        raise DatasetError(f"{path}: holds the negative id {int(arr.min())} (first at row {y}, column {x}); label and "
                           "instance ids must be 0 or more: save the map with ids >= 0 (e.g. 0 for 'no instance')")
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
                   shift_labels: bool = False, size: tuple[int, int] | None = None, size_of: str = "") -> np.ndarray:
    """Classes ``[H, W]`` int64 of a label map file (:func:`read_index_map`, then :func:`labels_to_classes`)."""
    return labels_to_classes(read_index_map(path, size=size, size_of=size_of), path, label_nc=label_nc,
                             contain_dontcare_label=contain_dontcare_label, shift_labels=shift_labels)


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


def image_format(path: Path) -> str:
    """Pillow's format name for ``path``'s extension (a :class:`UserError` for an unknown one)."""
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"{path}: cannot tell the image format from the extension (use .png or .jpg)")
    return fmt


def _checked_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"an image to write must be uint8 [H, W, 3], got {rgb.dtype} {tuple(rgb.shape)}")
    return rgb


def save_image(file, rgb: np.ndarray, path: str | os.PathLike) -> None:
    """Encode an RGB ``[H, W, 3]`` uint8 image into ``file`` (a path or binary file) in the format of
    ``path``'s extension (JPEG at quality 95): the step of :func:`write_image` for callers that
    write several outputs together."""
    fmt = image_format(Path(path))
    options = {"quality": 95} if fmt == "JPEG" else {}
    Image.fromarray(_checked_rgb(rgb)).save(file, format=fmt, **options)


def write_image(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write an RGB ``[H, W, 3]`` uint8 image atomically, in the format of ``path``'s extension
    (JPEG at quality 95); returns ``path``. A file that cannot be written is a :class:`UserError`
    naming it."""
    path = Path(path)
    rgb = _checked_rgb(rgb)
    image_format(path)
    with output_errors(path, "the image"), atomic_path(path) as tmp:
        save_image(tmp, rgb, path)
    return path


def write_index_map(path: str | os.PathLike, ids: np.ndarray) -> Path:
    """Write an integer map ``[H, W]`` as a greyscale PNG, atomically: 8-bit when every id is
    below 256, else 16-bit; returns ``path``."""
    path = Path(path)
    ids = np.asarray(ids)
    lo, hi = (int(ids.min()), int(ids.max())) if ids.size else (0, 0)
    if lo < 0 or hi >= 65536:
        raise ValueError(f"cannot write ids {lo} ... {hi} to {path}: a PNG index map holds 0 ... 65535")
    with output_errors(path, "the map"), atomic_path(path) as tmp:
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
