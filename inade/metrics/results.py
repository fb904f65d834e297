"""A results folder of ``python -m inade.test`` is one run, and says what it holds.

The test writes into a fresh hidden folder beside the destination (:func:`fresh_folder`)
and swaps it into place only when every file is written, so a failure, Ctrl-C or
``kill -9`` leaves the previous complete results (never a mix of two runs).
``test_run.json`` (:data:`MANIFEST`) lists every file with its size and SHA-256;
:func:`verify` checks a folder against it before a metric reads it.

A folder is recognised as the test's own by its ``test_run.json``: no other folder is
ever replaced or removed.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from inade.utils.errors import UserError
from inade.utils.files import _fsync_folder, chmod_as_created, write_text_atomic

MANIFEST = "test_run.json"
IMAGES = "images"  # the public code's sub-folder (util/html.py: <web_dir>/images/<visual>/<name>.png)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def _temp_pattern(name: str) -> re.Pattern:
    """Temporary folders of runs writing ``name``: ``.<name>.<pid>.<random>.tmp`` (``old``: the
    previous results while the new ones move in)."""
    return re.compile(rf"^\.{re.escape(name)}\.(\d+)\.(\w+)\.tmp$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_replaceable(out: Path) -> None:
    """Refuse to write ``out`` if its folder cannot be made or something there was not written
    by ``inade.test`` (before any work is done)."""
    base = out.parent  # nothing is created here: the nearest existing folder must take new entries
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir() or not os.access(base, os.W_OK | os.X_OK):
        raise UserError(f"{out.parent}: cannot write results there ({base} is "
                        f"{'not a folder' if not base.is_dir() else 'not writable'}) (--results_dir)")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UserError(f"{out}: exists and is not a results folder (--results_dir / --name / --which_epoch)")
    if out.is_dir() and not (out / MANIFEST).is_file() and any(out.iterdir()):
        raise UserError(f"{out}: exists and was not written by python -m inade.test (no {MANIFEST}); "
                        "move it away or choose another --results_dir")


def remove_stale(out: Path) -> None:
    """Remove the temporary folders of runs into ``out`` that died; if one died while its
    results were moving in, the previous complete results (kept aside) come back."""
    pattern = _temp_pattern(out.name)
    for p in sorted(out.parent.glob(f".{out.name}.*.tmp")):
        m = pattern.match(p.name)
        if not m or not p.is_dir() or _alive(int(m.group(1))):
            continue
        if m.group(2) == "old" and not out.exists() and (p / MANIFEST).is_file():
            os.replace(p, out)
        else:
            shutil.rmtree(p, ignore_errors=True)


@contextlib.contextmanager
def fresh_folder(out: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``out``; when the block ends without an error it
    replaces ``out`` (the previous results go only then); on an error it is removed."""
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".tmp", dir=out.parent))
        chmod_as_created(tmp, 0o777)
    except OSError as e:
        raise UserError(f"{out.parent}: cannot write results there ({e.strerror or e}) (--results_dir)") from None
    try:
        yield tmp
        _swap(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap(tmp: Path, out: Path) -> None:
    check_replaceable(out)
    old = out.parent / f".{out.name}.{os.getpid()}.old.tmp"
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    _fsync_folder(out.parent)
    shutil.rmtree(old, ignore_errors=True)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_table(folder: Path) -> dict[str, dict]:
    """``{relative path: {"bytes", "sha256"}}`` of every file under ``folder`` but the manifest."""
    rows = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            rows[p.relative_to(folder).as_posix()] = {"bytes": p.stat().st_size, "sha256": _digest(p)}
    return rows


def write_manifest(folder: Path, meta: dict) -> Path:
    """``folder/test_run.json``: ``meta`` and the table of every file written."""
    return write_text_atomic(folder / MANIFEST, json.dumps({**meta, "files": file_table(folder)}, indent=2) + "\n")


def read_manifest(folder: Path) -> dict:
    """``folder``'s ``test_run.json`` (``{}`` when there is none); a broken one is a one-line error."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file (a broken {MANIFEST}: rerun python -m inade.test)") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}): rerun python -m inade.test") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("files", {}), dict):
        raise UserError(f"{path}: not a {MANIFEST} of python -m inade.test (expected an object with a 'files' table)")
    return meta


def verify(folder: str | os.PathLike) -> dict:
    """Check ``folder`` against its ``test_run.json`` and return the manifest (``{}`` without one):
    every listed file present with its size and hash, no image that is not listed."""
    folder = Path(folder)
    meta = read_manifest(folder)
    files = meta.get("files")
    if files is None:
        return meta
    where = f"{folder / MANIFEST}"
    for rel, row in files.items():
        p = folder / rel
        if not isinstance(row, dict) or not p.is_file():
            raise UserError(f"{p}: listed in {where} but missing (the folder is not one complete run: rerun the test)")
        if p.stat().st_size != row.get("bytes") or _digest(p) != row.get("sha256"):
            raise UserError(f"{p}: differs from {where} (size or SHA-256): the folder mixes runs or was edited; rerun the test")
    for p in sorted((folder / IMAGES if (folder / IMAGES).is_dir() else folder).rglob("*")):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and p.relative_to(folder).as_posix() not in files:
            raise UserError(f"{p}: not listed in {where} (an image of another run): rerun the test into a fresh folder")
    return meta


def results_root(path: str | os.PathLike) -> Path | None:
    """The results folder holding ``path`` (``path`` itself, or an image folder one or two levels
    below, e.g. ``test_best/images/synthesized_image``), or ``None``."""
    path = Path(path)
    for candidate in (path, path.parent, path.parent.parent):
        if (candidate / MANIFEST).is_file():
            return candidate
    return None


def image_root(results: str | os.PathLike) -> Path:
    """Where a results folder keeps its image folders: ``images/`` (the public layout), or the folder
    itself (results written before the layout matched the public code's)."""
    results = Path(results)
    return results / IMAGES if (results / IMAGES).is_dir() else results
