"""A results folder of ``python -m inade.test`` is one run, and says what it holds.

The test writes into a fresh hidden folder beside the destination (:func:`fresh_folder`)
and swaps it into place only when every file is written, so a failure, Ctrl-C or
``kill -9`` leaves the previous complete results (never a mix of two runs).
``test_run.json`` (:data:`MANIFEST`) lists every file with its size and SHA-256;
:func:`verify` checks a folder against it before a metric reads it.

A folder is replaced only when everything in it is the test's own: each file listed in its
``test_run.json`` with the same size and SHA-256 (the manifest itself strictly of the test's
format), or the ``metrics.json`` / ``metrics.md`` that ``python -m inade.metrics all`` wrote
about it. Anything else (a user's notes, a figure, an edited image, a folder) stops the run
before any work, naming it; ``--overwrite`` replaces the folder anyway and says what it
removed. One run writes a results folder at a time (:func:`writer_lock`).
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
from inade.utils.files import (
    WRITE_ERRNOS,
    OutputError,
    _fsync_folder,
    chmod_as_created,
    exclusive_lock,
    signals_deferred,
    write_text_atomic,
)

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


def check_writable(out: Path) -> None:
    """Refuse, before anything is created, a results folder ``out`` that cannot be made there or that
    is a file or a symbolic link."""
    base = out.parent  # nothing is created here: the nearest existing folder must take new entries
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir() or not os.access(base, os.W_OK | os.X_OK):
        raise UserError(f"{out.parent}: cannot write results there ({base} is "
                        f"{'not a folder' if not base.is_dir() else 'not writable'}) (--results_dir)")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UserError(f"{out}: exists and is not a results folder (--results_dir / --name / --which_epoch)")


_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Keys every test_run.json of python -m inade.test holds besides "files".
_MANIFEST_KEYS = ("checkpoint", "which_epoch", "phase", "images", "layouts")


def own_files(out: Path) -> tuple[dict[str, dict], str | None]:
    """``(table, problem)``: the ``files`` table of ``out``'s ``test_run.json`` when it is strictly one
    that python -m inade.test writes (an object with its keys; every row a relative path inside the
    folder with an integer ``bytes`` and a hex ``sha256``), else ``({}, why not)``."""
    path = out / MANIFEST
    if not path.is_file() or path.is_symlink():
        return {}, f"no {MANIFEST}" if not path.exists() else f"{MANIFEST} is not a regular file"
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, OSError):
        return {}, f"{MANIFEST} is not valid JSON"
    if not isinstance(meta, dict) or not isinstance(meta.get("files"), dict) or any(k not in meta for k in _MANIFEST_KEYS):
        return {}, f"{MANIFEST} is not one python -m inade.test writes"
    for rel, row in meta["files"].items():
        parts = rel.split("/")
        if (not rel or rel.startswith("/") or any(q in ("", ".", "..") for q in parts) or "\\" in rel or rel == MANIFEST
                or not isinstance(row, dict) or type(row.get("bytes")) is not int or row["bytes"] < 0
                or not isinstance(row.get("sha256"), str) or not _SHA256.match(row["sha256"])):
            return {}, f"{MANIFEST} is not one python -m inade.test writes (its entry {rel[:80]!r})"
    return meta["files"], None


def _metrics_output(p: Path, out: Path) -> bool:
    """``out/metrics.json`` or ``out/metrics.md`` as ``python -m inade.metrics all`` writes them about ``out``."""
    try:
        if p.name == "metrics.json":
            data = json.loads(p.read_text(encoding="utf-8"))
            return isinstance(data, dict) and {"results", "metrics", "skipped"} <= data.keys()
        if p.name == "metrics.md":
            with open(p, encoding="utf-8") as f:
                return f.readline().startswith("Metrics of `")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return False


def foreign_files(out: Path) -> tuple[list[Path], str | None]:
    """``(paths, why)``: everything in the results folder ``out`` that ``python -m inade.test`` did not
    write (sorted; folders holding none of its files too), and why the manifest does not vouch for
    them when it is not the test's."""
    files, problem = own_files(out)
    own_dirs = {out} | {d for rel in files for d in (out / rel).parents if out in d.parents}
    foreign = []
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out).as_posix()
        if p.is_symlink():
            foreign.append(p)
        elif p.is_dir():
            if p not in own_dirs:
                foreign.append(p)
        elif p.is_file():
            if rel == MANIFEST and problem is None:
                continue
            if p.parent == out and p.name in ("metrics.json", "metrics.md") and problem is None and _metrics_output(p, out):
                continue
            row = files.get(rel)
            if row is None or p.stat().st_size != row["bytes"] or _digest(p) != row["sha256"]:
                foreign.append(p)
        else:
            foreign.append(p)
    return sorted(foreign, key=lambda q: (q.is_dir() and not q.is_symlink(), q)), problem  # files first


def check_replaceable(out: Path, overwrite: bool = False) -> list[Path]:
    """Refuse to write ``out`` if its folder cannot be made, or if something there was not written
    by ``inade.test`` (before any work is done; with ``overwrite``, return those paths instead)."""
    check_writable(out)
    if not out.is_dir():
        return []
    foreign, problem = foreign_files(out)
    if foreign and not overwrite:
        first = foreign[0]
        why = (f"not listed in {out / MANIFEST} with this size and SHA-256" if problem is None else problem)
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise UserError(f"{first}: in the results folder {out} but not written by python -m inade.test ({why}){more}; "
                        "nothing was touched: move it away, choose another --results_dir, or replace the folder "
                        "and everything in it with --overwrite")
    return foreign


@contextlib.contextmanager
def writer_lock(out: Path) -> Iterator[None]:
    """Hold the results folder ``out`` for this run (a lock file ``.<name>.lock`` beside it): a second
    ``python -m inade.test`` into ``out`` stops with one line naming this process."""
    missing = [d for d in (out.parent, *out.parent.parents) if not d.exists()]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{out.parent}: cannot write results there ({e.strerror or e}) (--results_dir)") from None
    try:
        with exclusive_lock(out.parent / f".{out.name}.lock",
                            f"{out}: another python -m inade.test is writing these results; wait for it to end or stop it"):
            yield
    finally:
        for d in missing:  # the folders made for the lock, when the run left nothing in them
            try:
                d.rmdir()
            except OSError:
                break


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
def fresh_folder(out: str | os.PathLike, *, overwrite: bool = False, removed: list | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``out``; when the block ends without an error it
    replaces ``out`` (the previous results go only then); on an error it is removed. What ``out`` holds
    that the test did not write stops the swap (:func:`check_replaceable`), unless ``overwrite``: then
    those paths are appended to ``removed``. A failed write (a full disk) is one line saying the
    previous results are intact."""
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
        gone = _swap(tmp, out, overwrite)
        if removed is not None:
            removed.extend(gone)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(e, OutputError) and e.errno not in WRITE_ERRNOS:
            raise
        kept = "the previous results there are intact" if out.is_dir() else "nothing was written there"
        raise UserError(f"{out}: cannot write the results ({e.strerror or e}); {kept} and the unfinished run's "
                        "files are removed") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap(tmp: Path, out: Path, overwrite: bool = False) -> list[Path]:
    foreign = check_replaceable(out, overwrite)  # again: a file may have been put there during the run
    old = out.parent / f".{out.name}.{os.getpid()}.old.tmp"
    with signals_deferred():  # never a Ctrl-C between the two renames
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
    _fsync_folder(out.parent)
    shutil.rmtree(old, ignore_errors=True)
    return foreign


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
