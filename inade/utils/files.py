"""Writing files so that a reader never sees a half-written one.

Every file the project writes for a user (checkpoints, images, JSON, statistics)
goes through :func:`atomic_path`: the content is written to a temporary file in
the destination folder, flushed to disk, then renamed over the destination, so a
crash, Ctrl-C or a full disk leaves either the old file or the new one.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from inade.utils.errors import UserError


def _fsync_folder(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (ignored where folders cannot be synced)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def chmod_as_created(path: Path, mode: int) -> None:
    """Give ``path`` the permissions ``open()`` (``mode`` 0o666) or ``mkdir`` (0o777) would have
    given it under the umask (``mkstemp`` and ``mkdtemp`` make theirs private)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, make_parents: bool = True) -> Iterator[Path]:
    """Context manager yielding a temporary path to write; on success it replaces ``path``.

    On an exception inside the block the temporary file is removed and ``path``
    is left as it was. The new file gets the permissions a plain ``open()`` would
    give it (``mkstemp`` alone would make it private).

    Example::

        with atomic_path("out/image.png") as tmp:
            Image.fromarray(array).save(tmp, format="PNG")
    """
    path = Path(path)
    folder = path.parent
    if make_parents:
        folder.mkdir(parents=True, exist_ok=True)
    elif not folder.is_dir():
        raise FileNotFoundError(f"{path}: folder {folder} does not exist")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        chmod_as_created(tmp, 0o666)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(folder)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`); returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return write_bytes_atomic(path, text.encode("utf-8"))


class OutputError(UserError, OSError):
    """A file the user asked for cannot be written (an ``OSError`` too, for callers that catch those)."""


@contextlib.contextmanager
def output_errors(path: str | os.PathLike, what: str = "the output") -> Iterator[None]:
    """Turn an ``OSError`` while writing ``path`` (no permission, no space, a folder in the way)
    into an :class:`OutputError` (a :class:`UserError`) naming the file."""
    try:
        yield
    except OutputError:
        raise
    except OSError as err:
        raise OutputError(f"{path}: cannot write {what} ({err.strerror or err})") from err


def check_output_path(path: str | os.PathLike, option: str) -> Path:
    """Refuse, before anything is written, an output path that cannot become a file: an existing
    folder, or a path below a file. Returns ``path`` as a :class:`Path`."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path}: is a folder; give a file name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{option} {path}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UserError(f"{option} {path}: cannot write in folder {parent} (no permission)")
            break
    return path
