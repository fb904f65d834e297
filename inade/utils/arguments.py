"""Command-line parsing whose mistakes are user errors: one line ``error: …``, exit code 2.

argparse prints its usage and ``prog: error: …`` itself; a parser built from
:class:`ArgumentParser` raises :class:`inade.utils.errors.UserError` instead, so the
entry point reports a mistyped option like any other user error (one line, naming
the option). ``--help`` works as usual.
"""
from __future__ import annotations

import argparse

from inade.utils.errors import UserError


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` raising :class:`UserError` (its subparsers too)."""

    def error(self, message: str):
        raise UserError(f"{self.prog}: {message}")
