"""Redraw a training run's ``curves.png`` and ``web/index.html`` from its ``metrics.jsonl``.

Usage::

    python -m inade.training.report checkpoints/<name> [--upto STEP] [--no_html]

For a finished run, or one still running (it reads what has been logged so far; the run
redraws both itself at its next save). Without matplotlib (the ``logs`` extra:
``pip install "inade[logs]"``) the page shows the table of records only.
"""
from __future__ import annotations

import sys
from pathlib import Path

from inade.training import logs
from inade.utils.arguments import ArgumentParser, at_least
from inade.utils.errors import UserError, run_command
from inade.utils.files import output_errors


def build_parser():
    p = ArgumentParser(prog="python -m inade.training.report", description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="the run's folder, checkpoints/<name>")
    p.add_argument("--upto", type=at_least(0), default=None, help="only what was logged up to this step")
    p.add_argument("--no_html", action="store_true", help="curves.png only")
    return p


def _report(argv=None) -> int:
    args = build_parser().parse_args(argv)
    folder = Path(args.folder)
    if not (folder / logs.METRICS).is_file():
        what = "no such folder" if not folder.is_dir() else f"no {logs.METRICS} (not a train.py run, or nothing logged yet)"
        raise UserError(f"{folder}: {what}")
    with output_errors(folder, "curves.png and web/index.html"):
        records = logs.redraw(folder, upto=args.upto, html_page=not args.no_html)
    losses = [r for r in records if "lr_G" in r]
    last = f", last at step {losses[-1]['step']}" if losses else ""
    print(f"{len(losses)} records{last}", file=sys.stderr)
    if (folder / logs.CURVES).exists() and logs.have_matplotlib():
        print(f"curves: {folder / logs.CURVES}", file=sys.stderr)
    else:
        print('curves.png not drawn: matplotlib is missing (pip install "inade[logs]")', file=sys.stderr)
    if not args.no_html:
        print(f"page:   {folder / logs.WEB / 'index.html'}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    """0 when written; a user error (no such run folder) is one line ``error: …`` and 2."""
    return run_command(_report, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
