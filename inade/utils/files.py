"""Writing files so that a reader never sees a half-written one.

Every file the project writes for a user (checkpoints, images, JSON, statistics)
goes through :func:`atomic_path`: the content is written to a temporary file in
the destination folder, flushed to disk, then renamed over the destination, so a
crash, Ctrl-C or a full disk leaves either the old file or the new one.
"""
from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
import sys
import tempfile
import threading
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
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as err:
        raise write_error(path, err) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        chmod_as_created(tmp, 0o666)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        failed = _write_failure(err, tmp)
        if failed is None:
            raise
        raise write_error(path, failed) from err
    _fsync_folder(folder)


# errnos that say the disk or the file system refused a write, whatever file the error names
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS}


def _write_failure(err: BaseException, tmp: Path) -> OSError | None:
    """The ``OSError`` behind a failed write of ``tmp``, else ``None`` (an error of something else:
    re-raised as it is). torch's zip writer reports a full disk as ``RuntimeError: [enforce fail at
    inline_container.cc…] unexpected pos …`` with the ``OSError`` as its context; it is unwrapped."""
    if isinstance(err, OutputError):
        return None
    seen = err
    for _ in range(4):  # the error itself, or what it was raised while handling
        if isinstance(seen, OSError) and not isinstance(seen, UserError):
            named = seen.filename is None or Path(seen.filename) in (tmp, tmp.parent)
            if named or seen.errno in WRITE_ERRNOS:
                return seen
            return None
        seen = seen.__cause__ or seen.__context__
        if seen is None:
            break
    if isinstance(err, RuntimeError) and "inline_container" in str(err):  # torch's writer, no OSError attached
        return OSError(errno.EIO, "the file could not be written to the end (a full disk?)")
    return None


def write_error(path: str | os.PathLike, err: OSError) -> OutputError:
    """One line for a write of ``path`` that failed with ``err``: what failed, and what is intact (the
    previous file, or nothing written). Keeps ``errno`` / ``strerror`` for callers that read them."""
    path = Path(path)
    why = err.strerror or str(err) or type(err).__name__
    kept = "the previous file is intact" if path.is_file() else "nothing was written"
    out = OutputError(f"{path}: cannot write it ({why}); {kept} and no temporary file is left")
    out.errno, out.strerror, out.path, out.kept = err.errno, err.strerror or why, path, kept
    return out


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

    def __str__(self) -> str:  # the message, also when errno / strerror are set
        return str(self.args[0]) if self.args else super().__str__()


@contextlib.contextmanager
def output_errors(path: str | os.PathLike, what: str = "the output") -> Iterator[None]:
    """Turn an ``OSError`` while writing ``path`` (no permission, no space, a folder in the way)
    into an :class:`OutputError` (a :class:`UserError`) naming the file."""
    try:
        yield
    except OutputError as err:
        if getattr(err, "path", None) != Path(path):
            raise
        out = OutputError(f"{path}: cannot write {what} ({err.strerror}); {err.kept} and no temporary file is left")
        out.errno, out.strerror, out.path, out.kept = err.errno, err.strerror, err.path, err.kept
        raise out from err.__cause__
    except OSError as err:
        out = OutputError(f"{path}: cannot write {what} ({err.strerror or err})")
        out.errno, out.strerror = err.errno, err.strerror or str(err)
        raise out from err


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


# ---------------------------------------------------------------------------
# One writer at a time, and rename pairs that a signal must not split
# ---------------------------------------------------------------------------


def _holder(fd: int) -> str:
    """``pid 123: python train.py …`` as the lock's holder wrote it into the lock file (or ``pid unknown``)."""
    try:
        pid, _, command = os.pread(fd, 600, 0).decode("utf-8", "replace").partition("\n")
    except OSError:
        pid, command = "", ""
    pid, command = pid.strip(), " ".join(command.split())
    if not pid.isdigit():
        return "pid unknown: it is starting or stopping"
    return f"pid {pid}: {command}" if command else f"pid {pid}"


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, busy: str) -> Iterator[None]:
    """Hold an exclusive lock on the lock file ``path`` (created, in an existing folder) while the block runs.

    The lock is a POSIX record lock (``fcntl.lockf``): the kernel drops it when the process ends in any
    way, ``kill -9`` included, so a dead run never leaves it stuck, and forked children (data loader
    workers) do not inherit it. The holder writes its pid and command into the file; a second process
    gets a :class:`UserError` ``<busy> (pid 123: python train.py …)``. The file is removed when the
    block ends. A symbolic link, folder or FIFO in its place is refused, never followed or opened for
    writing; a file system without locks (some network mounts) runs unlocked.
    """
    import fcntl  # noqa: PLC0415 - POSIX only

    path = Path(path)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
        except OSError as err:
            why = "a symbolic link: remove it" if err.errno == errno.ELOOP else (err.strerror or str(err))
            raise UserError(f"{path}: cannot open the lock file ({why})") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise UserError(f"{path}: the lock file is not a regular file; remove it")
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno in (errno.EAGAIN, errno.EACCES):
                    raise UserError(f"{busy} ({_holder(fd)})") from None
                if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise UserError(f"{path}: cannot lock it ({err.strerror or err})") from None
            try:  # a holder that was releasing removed the file: lock the one at the path now
                now = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                now = None
            if now is not None and (now.st_ino, now.st_dev) == (st.st_ino, st.st_dev):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        command = " ".join(" ".join(sys.argv).split())[:300]
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n{command}\n".encode("utf-8", "replace"), 0)
    except OSError:
        pass  # the holder's name only makes the other process's message better
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # still held: whoever opened this file before finds it gone and retries
        os.close(fd)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block ends (then they act as they would have): for a pair
    of renames that must not be split. Only in the main thread (where Python runs handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)
        if previous in (signal.SIG_IGN, None):
            continue
        old[sig] = previous
        signal.signal(sig, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)
        if pending:
            signal.raise_signal(pending[0])
