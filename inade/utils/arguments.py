"""Command-line parsing whose mistakes are user errors: one line ``error: …``, exit code 2.

argparse prints its usage and ``prog: error: …`` itself; a parser built from
:class:`ArgumentParser` raises :class:`inade.utils.errors.UserError` instead, so the
entry point reports a mistyped option like any other user error (one line, naming
the option). ``--help`` works as usual.

The option types below check a value where argparse reads it, so a meaningless
value (``--lr nan``, ``--batchSize 0``, ``--device banana``) is refused before any
work starts, with the option named. Every entry point uses these, not its own.
"""
from __future__ import annotations

import argparse
import math

from inade.utils.errors import UserError


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` raising :class:`UserError` (its subparsers too)."""

    def error(self, message: str):
        raise UserError(f"{message} (see {self.prog} --help)")


def _number(text: str, kind):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None


def at_least(low: int):
    """argparse type: an integer ``>= low``."""
    def parse(text: str) -> int:
        v = _number(text, int)
        if v < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {text}")
        return v
    parse.__name__ = f"integer >= {low}"
    return parse


def positive_finite(text: str) -> float:
    """argparse type: a finite number ``> 0`` (a learning rate, a variance, an aspect ratio)."""
    v = _number(text, float)
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return v


def non_negative_finite(text: str) -> float:
    """argparse type: a finite number ``>= 0`` (a loss weight)."""
    v = _number(text, float)
    if not (math.isfinite(v) and v >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return v


def adam_beta(text: str) -> float:
    """argparse type: an Adam beta in ``[0, 1)``."""
    v = _number(text, float)
    if not (0 <= v < 1):
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return v


def count_or_all(text: str) -> float:
    """argparse type of ``--how_many``: a whole number ``>= 1`` or ``inf`` (all; the public default)."""
    v = _number(text, float)
    if v == math.inf:
        return v
    if not (math.isfinite(v) and v >= 1 and v == int(v)):
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1 (or inf: all), got {text}")
    return int(v)


def _device_problem(text: str) -> str | None:
    """Why ``text`` is not a device this program can run on (None: it is one)."""
    import torch  # noqa: PLC0415  (parsing --help needs no torch)

    try:
        d = torch.device(text)
    except (RuntimeError, ValueError):
        return "not a device (use cpu, cuda or cuda:N)"
    if d.type not in ("cpu", "cuda"):
        return "this program runs on cpu or cuda[:N]"
    count = torch.cuda.device_count() if d.type == "cuda" and torch.cuda.is_available() else 0
    if d.type == "cuda" and count == 0:
        return "this machine has no CUDA device (use --device cpu)"
    if d.type == "cuda" and d.index is not None and d.index >= count:
        return f"this machine has {count} CUDA device(s), cuda:0 ... cuda:{count - 1}"
    return None


def device(text: str) -> str:
    """argparse type of ``--device``: ``cpu``, ``cuda`` or ``cuda:N`` that this machine has
    (returned as given; ``torch.device(value)`` then cannot fail)."""
    problem = _device_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"{text}: {problem}")
    return text


def check_device(name: str, option: str = "--device"):
    """:func:`device` outside a parser: the ``torch.device`` for ``name``, or a
    :class:`UserError` naming ``option`` and the value."""
    import torch  # noqa: PLC0415

    problem = _device_problem(name)
    if problem:
        raise UserError(f"{option} {name}: {problem}")
    return torch.device(name)


def gpu_ids(text: str) -> str:
    """argparse type of ``--gpu_ids``: ``-1`` (the CPU) or GPU numbers such as ``0`` or ``0,1``
    (returned as given). Checked while parsing, before any folder is looked at."""
    parts = [i.strip() for i in text.split(",") if i.strip()]
    if text.strip() != "-1" and not (parts and all(i.isdigit() for i in parts)):
        raise argparse.ArgumentTypeError(f"expects GPU numbers such as 0 or 0,1 (or -1 for the CPU), got {text!r}")
    return text


def folder_name(text: str) -> str:
    """argparse type of ``--name``: one folder name inside ``--checkpoints_dir`` / ``--results_dir``
    (no ``/``, not ``.`` or ``..``), so an experiment never writes outside the folder the user chose."""
    if not text or text in (".", "..") or "/" in text or "\\" in text or "\0" in text:
        raise argparse.ArgumentTypeError(f"must be one folder name (no '/', not '.' or '..'), got {text!r}")
    return text
