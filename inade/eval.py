"""``python -m inade.eval`` moved to ``python -m inade.metrics synthetic`` (the same options).

The synthetic-truth evaluation is one of the evaluation family's subcommands now
(:mod:`inade.metrics.synthetic`, docs/EVALUATION.md). This alias runs it after a one-line
note, so scripts written for it keep working; its functions are importable from here too.
"""
from __future__ import annotations

import sys

from inade.metrics.synthetic import compare_colors, evaluate, format_report, pair_distance, wasserstein_1d

__all__ = ["compare_colors", "evaluate", "format_report", "main", "pair_distance", "wasserstein_1d"]


def main(argv=None) -> int:
    from inade.metrics.__main__ import main as metrics_main  # noqa: PLC0415

    print("note: python -m inade.eval moved to python -m inade.metrics synthetic", file=sys.stderr, flush=True)
    return metrics_main(["synthetic", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
