"""User errors on the command line: one line ``error: …`` on stderr, exit code 2.

A user error is something the person running the program can fix (a missing
file or folder, a class id outside ``label_nc``, a corrupt checkpoint, a bad
option). The programs raise :class:`UserError` (or a subclass such as
``inade.data.DatasetError``) with a message that names the file or option, and
:func:`run_command` turns it into one line; anything else is a bug and keeps
its traceback. Ctrl-C (SIGINT) and SIGTERM are one line too, exit code 130 / 143
(128 + the signal, what a shell reports for a process the signal ended): SIGTERM
is raised as :class:`Interrupted` (a ``KeyboardInterrupt``), so every ``finally``
and ``except BaseException`` of the program removes its temporary files as for Ctrl-C.
"""
from __future__ import annotations

import contextlib
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator

EXIT_USER_ERROR = 2
MAX_CHARS = 800  # a longer message (e.g. every mismatched key of a state dict) is cut


class UserError(Exception):
    """An error the user can act on; the message names the file, option or value."""


# Missing files are user errors too: every FileNotFoundError the programs raise names the file.
USER_ERRORS = (UserError, FileNotFoundError)

# A DataLoader worker re-raises the worker's exception with its traceback as the message;
# its last line is "package.module.ErrorName: the message".
_WORKER_TRACEBACK = "Original Traceback"
_QUALIFIED_PREFIX = re.compile(r"^[\w.]+(Error|Exception): ")


def one_line(err: BaseException) -> str:
    """The message of ``err`` on one line (a worker's traceback reduced to its own message)."""
    text = str(err).strip()
    if _WORKER_TRACEBACK in text:
        text = _QUALIFIED_PREFIX.sub("", text.splitlines()[-1].strip())
    if isinstance(err, FileNotFoundError) and err.filename is not None and err.strerror:
        text = f"{err.filename}: {err.strerror.lower()}"
    elif isinstance(err, KeyError) and len(err.args) == 1:
        text = f"no entry {err.args[0]!r}"
    text = " ".join(part.strip() for part in text.splitlines() if part.strip()) or type(err).__name__
    return text if len(text) <= MAX_CHARS else f"{text[:MAX_CHARS]} … ({len(text) - MAX_CHARS} more characters)"


def report(err: BaseException, stream=None) -> int:
    """Print ``error: <message>`` (one line) on ``stream`` (stderr); returns the exit code 2."""
    print(f"error: {one_line(err)}", file=stream or sys.stderr, flush=True)
    return EXIT_USER_ERROR


class Interrupted(KeyboardInterrupt):
    """The signal ``signum`` (SIGTERM, or SIGINT) stopped the program; a ``KeyboardInterrupt``, so code
    that cleans up after Ctrl-C cleans up after it too."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signum)
        self.signum = int(signum)


def exit_status(signum: int) -> int:
    """The exit status of a program that ``signum`` stopped: 128 + signum (130 Ctrl-C, 143 SIGTERM)."""
    return 128 + int(signum)


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


@contextlib.contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`Interrupted` (SIGINT raises ``KeyboardInterrupt``
    as always). A handler someone else installed, or an ignored signal, is left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    mine = previous == signal.SIG_DFL
    if mine:
        signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        yield
    finally:
        if mine:
            signal.signal(signal.SIGTERM, previous)


def report_interrupt(err: KeyboardInterrupt, stream=None) -> int:
    """One line for a program stopped by Ctrl-C or SIGTERM; returns 130 / 143."""
    signum = getattr(err, "signum", signal.SIGINT)
    name = "Ctrl-C (SIGINT)" if signum == signal.SIGINT else signal.Signals(signum).name
    print(f"interrupted by {name}: stopped before the end; what it wrote is whole (a file it was writing "
          "is not left behind, the previous one is kept)", file=stream or sys.stderr, flush=True)
    return exit_status(signum)


def run_command(main: Callable[..., int | None], *args, **kwargs) -> int:
    """``main(*args, **kwargs)``, with user errors reported as one line and exit code 2, and Ctrl-C /
    SIGTERM as one line and exit code 130 / 143 (no traceback)."""
    try:
        with signals_as_exceptions():
            try:
                return main(*args, **kwargs) or 0
            except USER_ERRORS as err:
                return report(err)
            except ModuleNotFoundError as err:  # a third-party module this Python lacks: which environment has it
                why = missing_dependency(err)
                if why is None:
                    raise
                return report(UserError(why))
    except KeyboardInterrupt as err:
        return report_interrupt(err)


# Distribution names whose module is named otherwise.
_MODULE_OF = {"pillow": "PIL"}


def _extra_of(module: str) -> str | None:
    """The extra of the installed ``inade`` whose requirements name ``module`` (setup.py's
    extras_require, read from the package metadata: the one list), or None."""
    from importlib import metadata  # noqa: PLC0415

    try:
        requires = metadata.requires("inade") or []
    except metadata.PackageNotFoundError:
        return None
    for req in requires:
        name = re.split(r"[ <>=!~;\[]", req, maxsplit=1)[0].lower()
        extra = re.search(r"extra\s*==\s*['\"]([\w-]+)['\"]", req)
        if extra and extra.group(1) not in ("test", "all", "build") and _MODULE_OF.get(name, name) == module:
            return extra.group(1)
    return None


def missing_dependency(err: ModuleNotFoundError) -> str | None:
    """One line for a third-party module that this Python lacks: the project's environment when
    this is another Python and ``make setup`` made ``.venv``, else the extra to install when the
    module belongs to one. None for a module of this package (a bug: it keeps its traceback)."""
    from pathlib import Path  # noqa: PLC0415

    module = (err.name or "").split(".")[0]
    if not module or module == "inade":
        return None
    venv = Path(__file__).resolve().parents[2] / ".venv"
    if (venv / "bin" / "python").exists() and Path(sys.prefix).resolve() != venv.resolve():
        return (f"{sys.executable} has no module {module!r}: it is not the project's environment; run the command "
                "with .venv/bin/python (or source .venv/bin/activate first)")
    extra = _extra_of(module)
    if extra:
        return (f"no module {module!r}: it comes with the {extra!r} extra: pip install \"inade[{extra}]\" "
                f"(in a clone: pip install -e \".[{extra}]\")")
    return (f"{sys.executable} has no module {module!r}: use the environment that make setup makes "
            "(.venv/bin/python, or source .venv/bin/activate), or install the package with pip")
