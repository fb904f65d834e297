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
import difflib
import math

from inade.utils.errors import UserError


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` raising :class:`UserError` (its subparsers too); an unknown
    option gets the closest option name (``--batchsize``: did you mean ``--batchSize``?)."""

    def error(self, message: str):
        prefix = "unrecognized arguments: "
        if message.startswith(prefix):
            unknown = message[len(prefix):].split()
            hints = {u: m for u in unknown if (m := closest_option(self, u))}
            if hints:
                message = prefix + " ".join(f"{u} (did you mean {hints[u]}?)" if u in hints else u for u in unknown)
        raise UserError(f"{message} (see {self.prog} --help)")


def option_names(parser: argparse.ArgumentParser) -> list[str]:
    """Every ``--option`` of ``parser`` and of its subcommands."""
    names = []
    for action in parser._actions:
        names += [o for o in action.option_strings if o.startswith("--")]
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                names += option_names(sub)
    return sorted(set(names))


def closest_option(parser: argparse.ArgumentParser, typed: str) -> str | None:
    """The option name ``typed`` was most likely meant to be: the same name in another case
    (``--batchsize`` -> ``--batchSize``), else the closest spelling; None when none is close."""
    if not typed.startswith("--"):
        return None
    flag = typed.split("=", 1)[0]
    names = option_names(parser)
    same = [n for n in names if n.lower() == flag.lower()]
    if same:
        return same[0]
    lowered = {n.lower(): n for n in names}
    match = difflib.get_close_matches(flag.lower(), list(lowered), n=1, cutoff=0.75)
    return lowered[match[0]] if match else None


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
    if text == "cpu":  # every default: parsing needs no torch
        return None
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
