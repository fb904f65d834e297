"""A small PNG reader and writer (zlib + numpy), so label maps, instance maps and
images need no imaging library.

Reads every non-interlaced PNG: greyscale (1, 2, 4, 8, 16 bit), RGB (8, 16),
palette (1, 2, 4, 8; the indices, or RGB with ``expand_palette=True``),
greyscale + alpha and RGBA (8, 16). Writes 8- and 16-bit greyscale, RGB and
RGBA, atomically (a temporary file in the same folder, then a rename).
Every error names the file.
"""
from __future__ import annotations

import os
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# colour type -> channels
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}


class PNGError(ValueError):
    """A file that is not a PNG this module can read (the message names the file)."""


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


def _chunks(data: bytes, name: str):
    """Yield ``(type, payload)`` of each chunk, checking lengths and CRCs."""
    pos = len(SIGNATURE)
    while pos < len(data):
        if pos + 8 > len(data):
            raise PNGError(f"{name}: truncated PNG (chunk header at byte {pos})")
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 8 + length + 4
        if end > len(data):
            raise PNGError(f"{name}: truncated PNG ({ctype.decode('latin-1')} chunk at byte {pos})")
        payload = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[end - 4:end])
        if zlib.crc32(ctype + payload) & 0xFFFFFFFF != crc:
            raise PNGError(f"{name}: corrupt PNG (CRC mismatch in {ctype.decode('latin-1')} chunk)")
        yield ctype, payload
        if ctype == b"IEND":
            return
        pos = end
    raise PNGError(f"{name}: truncated PNG (no IEND chunk)")


def _paeth_row(cur: bytearray, prev: bytes, bpp: int) -> None:
    for i in range(len(cur)):
        a = cur[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        pred = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
        cur[i] = (cur[i] + pred) & 0xFF


def _average_row(cur: bytearray, prev: bytes, bpp: int) -> None:
    for i in range(len(cur)):
        a = cur[i - bpp] if i >= bpp else 0
        cur[i] = (cur[i] + ((a + prev[i]) >> 1)) & 0xFF


def _unfilter(raw: bytes, height: int, row_bytes: int, bpp: int, name: str) -> np.ndarray:
    """Undo the per-row filters -> ``[height, row_bytes]`` uint8."""
    if len(raw) < height * (row_bytes + 1):
        raise PNGError(f"{name}: truncated image data ({len(raw)} bytes, expected {height * (row_bytes + 1)})")
    rows = np.frombuffer(raw, np.uint8, height * (row_bytes + 1)).reshape(height, row_bytes + 1)
    out = np.zeros((height, row_bytes), np.uint8)
    prev = np.zeros(row_bytes, np.uint8)
    for y in range(height):
        ftype, cur = int(rows[y, 0]), rows[y, 1:]
        if ftype == 0:
            rec = cur
        elif ftype == 1:  # Sub: running sum along the row, per byte of a pixel
            pad = (-row_bytes) % bpp
            c = np.concatenate([cur, np.zeros(pad, np.uint8)]).reshape(-1, bpp)
            rec = np.cumsum(c, axis=0, dtype=np.uint64).astype(np.uint8).reshape(-1)[:row_bytes]
        elif ftype == 2:  # Up
            rec = cur + prev
        elif ftype in (3, 4):
            buf = bytearray(cur.tobytes())
            (_average_row if ftype == 3 else _paeth_row)(buf, prev.tobytes(), bpp)
            rec = np.frombuffer(bytes(buf), np.uint8)
        else:
            raise PNGError(f"{name}: corrupt PNG (unknown filter type {ftype} in row {y})")
        out[y] = rec
        prev = out[y]
    return out


def _samples(rows: np.ndarray, width: int, channels: int, depth: int) -> np.ndarray:
    """Unfiltered bytes ``[H, row_bytes]`` -> samples ``[H, W, channels]`` (uint8 or uint16)."""
    h = rows.shape[0]
    if depth == 16:
        return rows.view(">u2").reshape(h, width, channels).astype(np.uint16)
    if depth == 8:
        return rows.reshape(h, width, channels)
    bits = np.unpackbits(rows, axis=1)[:, : width * depth].reshape(h, width, depth)
    weights = (1 << np.arange(depth - 1, -1, -1)).astype(np.uint8)
    return (bits * weights).sum(axis=2, dtype=np.uint8)[..., None]


def read_png(path: str | os.PathLike, *, expand_palette: bool = False) -> np.ndarray:
    """Read a PNG file.

    Returns:
        ``[H, W]`` for greyscale and palette images (palette indices unless
        ``expand_palette``), ``[H, W, C]`` otherwise (C = 2 grey+alpha, 3 RGB, 4 RGBA;
        palette images with ``expand_palette`` give RGB). dtype ``uint8``, or ``uint16``
        for 16-bit files.

    Raises:
        FileNotFoundError: no such file (named).
        PNGError (a ``ValueError``): not a PNG, corrupt, truncated or interlaced (named).
    """
    path = Path(path)
    name = str(path)
    if not path.is_file():
        raise FileNotFoundError(f"{name}: no such file")
    data = path.read_bytes()
    if not data.startswith(SIGNATURE):
        raise PNGError(f"{name}: not a PNG file (bad signature)")
    header, palette, idat = None, None, []
    for ctype, payload in _chunks(data, name):
        if ctype == b"IHDR":
            if len(payload) != 13:
                raise PNGError(f"{name}: corrupt PNG (IHDR of {len(payload)} bytes)")
            header = struct.unpack(">IIBBBBB", payload)
        elif ctype == b"PLTE":
            palette = np.frombuffer(payload, np.uint8).reshape(-1, 3)
        elif ctype == b"IDAT":
            idat.append(payload)
    if header is None:
        raise PNGError(f"{name}: corrupt PNG (no IHDR chunk)")
    width, height, depth, ctype, _, _, interlace = header
    if ctype not in _CHANNELS or depth not in _DEPTHS[ctype]:
        raise PNGError(f"{name}: unsupported PNG (colour type {ctype}, bit depth {depth})")
    if interlace:
        raise PNGError(f"{name}: interlaced (Adam7) PNGs are not supported; re-save it without interlacing")
    if width == 0 or height == 0:
        raise PNGError(f"{name}: empty image ({width}x{height})")
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as err:
        raise PNGError(f"{name}: corrupt PNG image data ({err})") from err
    channels = _CHANNELS[ctype]
    row_bytes = (width * channels * depth + 7) // 8
    bpp = max(1, channels * depth // 8)
    img = _samples(_unfilter(raw, height, row_bytes, bpp, name), width, channels, depth)
    if ctype == 3 and expand_palette:
        if palette is None:
            raise PNGError(f"{name}: palette image without a PLTE chunk")
        if int(img.max()) >= len(palette):
            raise PNGError(f"{name}: palette index {int(img.max())} past the {len(palette)}-entry palette")
        return palette[img[..., 0]]
    return img[..., 0] if channels == 1 else img


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


def _chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload) & 0xFFFFFFFF)


def encode_png(array: np.ndarray) -> bytes:
    """``[H, W]`` (grey), ``[H, W, 3]`` (RGB) or ``[H, W, 4]`` (RGBA), uint8 or uint16 -> PNG bytes."""
    a = np.asarray(array)
    if a.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"array must be uint8 or uint16, got {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        ctype = 0
    elif a.ndim == 3 and a.shape[2] in (3, 4):
        ctype = 2 if a.shape[2] == 3 else 6
    else:
        raise ValueError(f"array must be [H, W], [H, W, 3] or [H, W, 4], got shape {a.shape}")
    h, w = a.shape[:2]
    if h == 0 or w == 0:
        raise ValueError(f"array is empty: shape {a.shape}")
    depth = 16 if a.dtype == np.uint16 else 8
    rows = np.ascontiguousarray(a.astype(">u2") if depth == 16 else a).view(np.uint8).reshape(h, -1)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1)  # filter type 0 on every row
    header = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0)
    return SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + _chunk(b"IEND", b"")


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename,
    so a reader never sees a half-written file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp creates 0600; give the file the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_png(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``array`` (see :func:`encode_png`) to ``path`` atomically; returns the path."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: folder {path.parent} does not exist")
    return write_atomic(path, encode_png(array))
