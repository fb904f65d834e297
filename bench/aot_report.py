"""Static resource report of every Triton kernel, compiled as a real launch specialises it.

For each distinct launch of the three ops (captured by ``bench.aot``: forward and
backward, float32 / bfloat16 / float16, contiguous and channels-last, model-like
shapes) and each of sm_90 and sm_80: registers per thread and spilled bytes
(``ptxas -v``, Triton's own ptxas), shared memory (Triton's metadata), the
theoretical occupancy that implies on an H100 (CUDA's occupancy rules, below), and
the width of every global load/store of the kernel's feature maps (from the LLVM
IR, exact per instruction). Writes ``report.json`` and ``report.md`` under
``--out`` (default ``bench/results/aot``); with ``--baseline`` (an earlier
``report.json``) the Markdown shows before and after.

    python -m bench.aot_report --pre-tuning --name before --label "before tuning"
    python -m bench.aot_report --baseline bench/results/aot/before.json    # about 5 min on 2 cores

What it cannot show: occupancy is not speed (a kernel at 25 % occupancy with
enough bytes in flight per thread can saturate memory, one at 100 % can stall on a
gather), and nothing here ran on a GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from bench import aot

# H100 (sm_90) per-SM limits used by CUDA's occupancy calculator.
H100 = {"regs_per_sm": 65536, "reg_alloc_unit": 256, "max_warps": 64, "max_blocks": 32,
        "smem_per_sm": 228 * 1024, "smem_reserved_per_block": 1024, "smem_alloc_unit": 128}

# Kernels that do dense math per byte (implicit GEMMs); every other kernel is held to
# the memory-bound goals (vectorised feature-map accesses, >= 50 % occupancy).
COMPUTE_BOUND = {
    "inade.kernels.instance_conv2d._forward_kernel",
    "inade.kernels.instance_conv2d._backward_input_kernel",
    "inade.kernels.instance_conv2d._backward_weight_kernel",
}
# Memory-bound kernels whose feature-map reads are stencil gathers (every tap of a window
# carries its own bounds mask, so no two neighbouring reads share a mask): held to the
# no-spill and occupancy goals, not to vectorised accesses.
STENCIL = {"inade.kernels.instance_conv2d._renorm_scale_kernel"}
OCCUPANCY_GOAL = 0.5
# Why a memory-bound kernel stays under the occupancy goal after tuning (shown in the report).
OCCUPANCY_MISSES = {
    "instance_modulation._backward_reduce_kernel":
        "tensor-core segment sum with float32 operands in tf32x3 (three products on split operands; 16-bit inputs "
        "are converted to float32 first) and two [BLOCK_C, BLOCK_L] accumulators: 97-115 registers in float32 "
        "(25 %), 157 with the 16-bit pixel tile (19 %). Every tile that keeps 16-byte loads needs more than 64 "
        "registers (16x16 tiles reach 44 % with 8-byte loads; 8 warps do not lower the count). Its bytes in "
        "flight come from the cp.async pipeline (num_stages) rather than from resident warps",
    "instance_avg_pool._forward_kernel":
        "the same one-hot tensor-core sum: 16-bit inputs reach 50 % (one tf32 or fp16 product); float32 needs "
        "tf32x3 (three products, 93 registers: 31 %); a 16x32 tile gives 38 % but doubles the channel blocks",
}
VECTOR_BYTES = 16


def _ceil(a: int, b: int) -> int:
    return -(-a // b) * b


def h100_occupancy(registers: int, num_warps: int, shared_bytes: int) -> dict:
    """Resident blocks per SM and theoretical occupancy (resident warps / 64) on an H100.

    Registers are allocated per warp in units of 256 (``ceil(regs * 32 / 256) * 256``);
    each block also reserves 1 KB of shared memory (granularity 128 B); at most 32
    blocks and 64 warps per SM.
    """
    regs_per_warp = _ceil(max(registers, 1) * 32, H100["reg_alloc_unit"])
    by_regs = (H100["regs_per_sm"] // regs_per_warp) // num_warps
    smem = _ceil(shared_bytes + H100["smem_reserved_per_block"], H100["smem_alloc_unit"])
    by_smem = H100["smem_per_sm"] // smem
    by_warps = H100["max_warps"] // num_warps
    blocks = min(H100["max_blocks"], by_warps, by_regs, by_smem)
    limits = {"registers": by_regs, "shared memory": by_smem, "warps": by_warps, "blocks": H100["max_blocks"]}
    return {"blocks_per_sm": blocks, "occupancy": blocks * num_warps / H100["max_warps"],
            "limited_by": min(limits, key=limits.get)}


def main_tensors(launch: dict) -> list[str]:
    """The launch's feature-map pointers: its tensor arguments of the largest size, leaving
    out the per-chunk partial sums of split reductions (``part_*``)."""
    tensors = {n: a["numel"] for n, a in launch["args"].items() if "tensor" in a and not n.startswith("part_")}
    top = max(tensors.values(), default=0)
    return sorted(n for n, v in tensors.items() if v == top)


def _mentions(source: str, names) -> bool:
    import re  # noqa: PLC0415

    return any(re.search(rf"\b{re.escape(n)}\b", source) for n in names)


def summarise(result: dict) -> dict:
    """One report row from a compile result of ``bench.aot``."""
    name = f"{result['module']}.{result['kernel']}"
    row = {"kernel": name.replace("inade.kernels.", ""), "case": result["case"].split("/", 1)[1],
           "arch": f"sm_{result['arch']}", "memory_bound": name not in COMPUTE_BOUND, "stencil": name in STENCIL}
    if "error" in result:
        return {**row, "error": result["error"]}
    main = main_tensors(result)
    accesses = [a for a in result["accesses"] if _mentions(a["source"], main)]
    loads = [a["bytes"] for a in accesses if a["kind"] == "ld"]
    stores = [a["bytes"] for a in accesses if a["kind"] == "st"]
    row.update({
        "num_warps": result["num_warps"], "num_stages": result["num_stages"],
        "autotune_configs": result["options"].get("autotune_configs"),
        "registers": result["registers"], "spill_bytes": result["spill_store_bytes"] + result["spill_load_bytes"],
        "spill_store_bytes": result["spill_store_bytes"], "spill_load_bytes": result["spill_load_bytes"],
        "shared_bytes": result["shared_bytes"],
        "constants": result["constants"], "divisible_by_16": result["divisible_by_16"],
        "main_tensors": main,
        "main_load_bytes_min": min(loads) if loads else None, "main_store_bytes_min": min(stores) if stores else None,
        "main_loads": len(loads), "main_stores": len(stores),
        "constexprs": {n: a["value"] for n, a in result["args"].items()
                       if "value" in a and result["signature"].get(n) == "constexpr" and n not in result["constants"]},
    })
    if result["arch"] == 90:
        row.update(h100_occupancy(result["registers"], result["num_warps"], result["shared_bytes"]))
    row["vectorised"] = all(b >= VECTOR_BYTES for b in loads + stores) if loads or stores else None
    return row


def problems(rows: list[dict]) -> list[str]:
    """What breaks the goals: compile errors, spills, scalar feature-map accesses of
    memory-bound kernels, memory-bound kernels under 50 % occupancy on H100."""
    out = []
    for r in rows:
        where = f"{r['kernel']} [{r['case']}, {r['arch']}]"
        if "error" in r:
            out.append(f"{where}: does not compile: {r['error'][:200]}")
            continue
        if r["spill_bytes"]:
            out.append(f"{where}: spills {r['spill_bytes']} bytes ({r['registers']} registers)")
        if r["memory_bound"] and not r["stencil"] and r["vectorised"] is False:
            out.append(f"{where}: feature-map accesses of {r['main_load_bytes_min']} / {r['main_store_bytes_min']} "
                       f"bytes (load / store), not >= {VECTOR_BYTES}")
        if r["memory_bound"] and "occupancy" in r and r["occupancy"] < OCCUPANCY_GOAL:
            why = OCCUPANCY_MISSES.get(r["kernel"])
            out.append(f"{where}: {r['occupancy']:.0%} occupancy on H100 (limited by {r['limited_by']})"
                       + (" [explained below]" if why else ""))
    return out


def _kernel_table(rows: list[dict], baseline: dict | None) -> list[str]:
    """Per kernel and arch: worst case over its launches (max registers, spills, min occupancy)."""
    def worst(rs):
        ok = [r for r in rs if "error" not in r]
        if not ok:
            return None
        occ = [r["occupancy"] for r in ok if "occupancy" in r]
        vec = [r["vectorised"] for r in ok if r["vectorised"] is not None]
        return {"launches": len(rs), "errors": len(rs) - len(ok), "registers": max(r["registers"] for r in ok),
                "spill": max(r["spill_bytes"] for r in ok), "shared": max(r["shared_bytes"] for r in ok),
                "warps": sorted({r["num_warps"] for r in ok}), "occupancy": min(occ) if occ else None,
                "vectorised": (sum(vec), len(vec)), "memory_bound": ok[0]["memory_bound"]}

    def fmt(w):
        if w is None:
            return ["error"] * 5
        occ = f"{w['occupancy']:.0%}" if w["occupancy"] is not None else "-"
        vec = f"{w['vectorised'][0]}/{w['vectorised'][1]}" if w["vectorised"][1] else "-"
        return [str(w["registers"]), str(w["spill"]), str(w["shared"]), occ, vec]

    groups = {}
    for r in rows:
        groups.setdefault((r["kernel"], r["arch"]), []).append(r)
    base_groups = {}
    for r in (baseline or {}).get("rows", []):
        base_groups.setdefault((r["kernel"], r["arch"]), []).append(r)
    head = ["kernel", "arch", "bound", "launches", "warps", "regs", "spill B", "smem B", "occ. H100", "vec. ≥16 B"]
    if baseline:
        head = head[:5] + ["regs before", "regs", "spill before", "spill", "smem B", "occ. before", "occ.",
                           "vec. before", "vec."]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (kernel, arch), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        w = worst(rs)
        bound = ("memory (stencil)" if rs[0].get("stencil") else "memory") if rs[0]["memory_bound"] else "compute"
        warps = ",".join(map(str, w["warps"])) if w else "-"
        now = fmt(w)
        if baseline:
            before = fmt(worst(base_groups.get((kernel, arch), []))) if (kernel, arch) in base_groups else ["-"] * 5
            cells = [kernel, arch, bound, str(len(rs)), warps, before[0], now[0], before[1], now[1], now[2],
                     before[3], now[3], before[4], now[4]]
        else:
            cells = [kernel, arch, bound, str(len(rs)), warps, *now]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(report: dict, baseline: dict | None) -> str:
    rows = report["rows"]
    probs = report["problems"]
    out = [
        "# Static resource report of the Triton kernels",
        "",
        f"Produced by `python -m bench.aot_report` ({report['generated']}; triton {report['triton']}, "
        f"ptxas {report['ptxas']}; no GPU involved: compiled ahead of time). "
        f"{len(rows)} compilations of {report['launches']} distinct launches (the specialisation a real launch "
        "gets: dtypes, constexprs, unit strides as constants, `tt.divisibility` on pointers and sizes "
        "divisible by 16, as captured from the public ops forward and backward).",
        "",
        "Per kernel and architecture, the worst launch: most registers per thread, most spilled bytes, most "
        "shared memory, least theoretical occupancy on H100 (sm_90 rows; CUDA's rules: 65536 registers per "
        "SM allocated per warp in units of 256, 64 warps and 32 blocks per SM, 228 KB shared memory per SM "
        "with 1 KB reserved per block), and how many launches have every feature-map load/store at 16 bytes "
        "or wider (`ld.global.v4.b32`, `cp.async` of 16 B). Goals: no spill anywhere; memory-bound kernels "
        f"vectorised and at >= {OCCUPANCY_GOAL:.0%} occupancy.",
        "",
    ]
    if baseline:
        out += [f"Before: `{baseline.get('label', 'baseline')}` ({baseline['generated']}); after: this tree.", ""]
    out += _kernel_table(rows, baseline)
    out += ["", "## Against the goals", ""]
    out += [f"- {p}" for p in probs] if probs else ["- every kernel meets them: no spill; every memory-bound "
                                                     "kernel vectorised and at >= 50 % occupancy on H100."]
    missed = sorted({p.split(" [", 1)[0] for p in probs if "[explained below]" in p})
    if missed:
        out += ["", "## Occupancy misses explained", ""]
        out += [f"- `{k}`: {why}." for k, why in OCCUPANCY_MISSES.items() if any(m.startswith(k) for m in missed)]
    out += ["", "## What this cannot show", "",
            "Occupancy is not speed: it bounds how many warps can hide latency, but a memory-bound kernel needs "
            "bytes in flight (warps × loads per thread × width), and the gathers of the per-instance tables, "
            "L2 hit rates, tail effects of the grid and the host-side merges are not in it. Only a run on the GPU "
            "(`python -m bench.gpu_check`) measures time and bandwidth.", ""]
    return "\n".join(out)


# The tile constants and warps of the kernels before this report's tuning (commit 4a57bd7),
# applied to today's captured launches by ``--pre-tuning`` to rebuild the "before" column.
PRE_TUNING = {
    "_stats_kernel": {"BLOCK_C": 32, "BLOCK_HW": 128, "num_warps": 4},
    "_apply_kernel": {"BLOCK_C": 32, "BLOCK_HW": 128, "num_warps": 4},
    "_backward_dx_kernel": {"BLOCK_C": 32, "BLOCK_HW": 128, "num_warps": 4},
    "_backward_reduce_kernel": {"BLOCK_C": 32, "BLOCK_HW": 64, "num_warps": 4},
    "instance_avg_pool._forward_kernel": {"BLOCK_C": 32, "BLOCK_HW": 64, "num_warps": 4},
    "instance_conv2d._forward_kernel": {"num_warps": 4},
    "instance_conv2d._backward_weight_kernel": {"BLOCK_M": 64, "num_warps": 4},
}


def _pre_tuning(launch: dict) -> dict:
    """``launch`` with the pre-tuning constants of :data:`PRE_TUNING` (kernel name, or op.kernel)."""
    op = launch["module"].rsplit(".", 1)[-1]
    over = PRE_TUNING.get(f"{op}.{launch['kernel']}") or (PRE_TUNING.get(launch["kernel"])
                                                          if op == "instance_modulation" else None)
    if not over:
        return launch
    launch = json.loads(json.dumps(launch))
    for name, value in over.items():
        if name == "num_warps":
            launch["options"]["num_warps"] = value
        else:
            launch["args"][name] = {"value": value}
    return launch


def build(quick: bool = False, archs=aot.ARCHS, pre_tuning: bool = False) -> dict:
    """Capture, compile, summarise: the report as a dict (``rows``, ``problems``, versions).
    ``pre_tuning``: with the tile constants of :data:`PRE_TUNING` (the "before" report)."""
    import subprocess  # noqa: PLC0415

    import triton  # noqa: PLC0415

    launches = aot.capture(aot.OPS, quick=quick)
    if pre_tuning:
        launches = [_pre_tuning(x) for x in launches]
    results = aot.compile_launches(launches, archs, with_usage=True)
    rows = [summarise(r) for r in results]
    ptxas = subprocess.run([_ptxas_path(), "--version"], capture_output=True, text=True).stdout.strip().splitlines()
    return {"generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "triton": triton.__version__,
            "ptxas": ptxas[-1] if ptxas else "?", "launches": len(launches), "quick": quick,
            "load_avg": os.getloadavg(), "rows": rows, "problems": problems(rows)}


def _ptxas_path() -> str:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    import subprocess  # noqa: PLC0415

    code = "from triton.backends.nvidia.compiler import get_ptxas; print(get_ptxas(90).path)"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.strip()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.aot_report", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join("bench", "results", "aot"))
    parser.add_argument("--baseline", help="an earlier report.json, shown as 'before'")
    parser.add_argument("--label", default="after", help="name of this report in later comparisons")
    parser.add_argument("--name", default="report", help="file stem under --out (report -> report.json, report.md)")
    parser.add_argument("--quick", action="store_true", help="float32 and bfloat16 only")
    parser.add_argument("--pre-tuning", action="store_true",
                        help="compile with the tile constants before tuning (PRE_TUNING): the 'before' report")
    parser.add_argument("--render", action="store_true", help="only rewrite the Markdown from --out's JSON")
    args = parser.parse_args(argv)
    baseline = None
    if args.baseline:
        try:
            with open(args.baseline) as f:
                baseline = json.load(f)
        except (OSError, ValueError) as e:
            print(f"error: cannot read --baseline {args.baseline}: {e}", file=sys.stderr)
            return 2
    if args.render:
        with open(os.path.join(args.out, f"{args.name}.json")) as f:
            report = json.load(f)
        report["problems"] = problems(report["rows"])
    else:
        report = {"label": args.label, **build(quick=args.quick, pre_tuning=args.pre_tuning)}
    from inade.utils.files import write_text_atomic  # noqa: PLC0415

    os.makedirs(args.out, exist_ok=True)
    write_text_atomic(os.path.join(args.out, f"{args.name}.json"), json.dumps(report, indent=1) + "\n")
    text = markdown(report, baseline)
    write_text_atomic(os.path.join(args.out, f"{args.name}.md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
