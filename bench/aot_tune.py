"""Try block sizes and warp counts of one Triton kernel without a GPU.

Captures the op's real launches (``bench.aot``), overrides constexprs and launch
options, compiles, and prints registers, spills, shared memory, H100 occupancy and
the width of the feature-map accesses per variant:

    python -m bench.aot_tune instance_modulation _apply_kernel --warps 4 8 \\
        --set BLOCK_C=32,BLOCK_HW=128 --set BLOCK_C=16,BLOCK_HW=128 --case float32-contig

Each ``--set`` is one variant (comma-separated ``NAME=INT``), combined with each
``--warps`` and ``--stages`` value (none: the launcher's own).
"""
from __future__ import annotations

import argparse
import copy
import sys

from bench import aot, aot_report


def variants(launches, sets, warps, stages=()):
    """Every launch with every (constexpr overrides, num_warps, num_stages) combination applied."""
    out = []
    for launch in launches:
        for overrides in sets or [{}]:
            for w, st in [(w, st) for w in warps or [None] for st in stages or [None]]:
                v = copy.deepcopy(launch)
                for name, value in overrides.items():
                    if name not in v["args"]:
                        raise SystemExit(f"error: {launch['kernel']} has no argument {name}")
                    v["args"][name] = {"value": value}
                if w is not None:
                    v["options"]["num_warps"] = w
                if st is not None:
                    v["options"]["num_stages"] = st
                v["case"] = (f"{v['case']} {','.join(f'{k}={x}' for k, x in overrides.items())} warps={w or '-'}"
                             f" stages={st or '-'}")
                out.append(v)
    return out


def _parse_set(text: str) -> dict:
    try:
        return {k: int(v) for k, v in (item.split("=") for item in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=INT[,NAME=INT...], got {text!r}") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.aot_tune", description=__doc__.split("\n")[0])
    parser.add_argument("op", choices=aot.OPS)
    parser.add_argument("kernel")
    parser.add_argument("--set", dest="sets", action="append", type=_parse_set, default=[])
    parser.add_argument("--warps", nargs="*", type=int, default=[])
    parser.add_argument("--stages", nargs="*", type=int, default=[])
    parser.add_argument("--case", default="", help="only launches whose case label contains this")
    parser.add_argument("--archs", nargs="+", type=int, default=[90])
    args = parser.parse_args(argv)
    launches = [x for x in aot.capture([args.op], quick=True) if x["kernel"] == args.kernel and args.case in x["case"]]
    if not launches:
        print(f"error: no launch of {args.kernel} matches --case {args.case!r}", file=sys.stderr)
        return 2
    rows = [aot_report.summarise(r) for r in aot.compile_launches(variants(launches, args.sets, args.warps, args.stages), args.archs)]
    for r in rows:
        if "error" in r:
            print(f"{r['case']:90s} {r['arch']} ERROR {r['error'][:300]}")
            continue
        occ = f"{r['occupancy']:.0%}" if "occupancy" in r else "-"
        print(f"{r['case']:90s} {r['arch']} regs {r['registers']:3d} spill {r['spill_bytes']:5d} smem "
              f"{r['shared_bytes']:6d} occ {occ:>4s} ld {r['main_load_bytes_min']} st {r['main_store_bytes_min']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
