"""The exported generator against our eager one: onnxruntime (the ``.onnx`` of
``python -m inade.export``), the AOTInductor ``.pt2`` loaded with torch alone, and
``inade.Generator`` itself — inference time, agreement, export time and size.

Configuration: CelebAMask-HQ (``inade.config("celeba")``: 19 classes, 256×256, ngf 64,
noise_nc 64, z_dim 256) with random weights (our initialisation, seed 0), batch 1, the
face-like layout of ``--instances`` instances of bench_model_speed (the same inputs).

Method (:mod:`bench.common`'s, as the other whole-model rows): one process builds the model,
its inputs and the eager output; one process per format exports it (timed: that is the export
cost); then each path is timed in its own process — ``--warmup`` untimed calls, ``--calls`` timed
ones, min, median and spread, the load average before and after — and its output is compared with
the eager one (``max_rel_err``: max |Δ| over max |eager|). The eager path runs the ops on the
backend ``auto`` picks (``cpp`` with the extension). onnxruntime gets ``--threads`` intra-op
threads (spinning off under ``OMP_WAIT_POLICY=passive``, as OpenMP's threads are then); the ``.pt2``
runs with the threads it was compiled for (the machine's). On a shared machine run it with
``OMP_WAIT_POLICY=passive``: spinning threads of one path steal the cores of the others' processes.

    python -m bench.bench_export                        # full size: the .pt2 build takes many minutes
    python -m bench.bench_export --ngf 16 --size 64 --calls 3 --name export_quick --no-write
    python -m bench.bench_export --work DIR             # keep the exported files in DIR (and reuse them)
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench import common

PATHS = ("eager", "onnxruntime", "pt2")
FORMATS = {"onnxruntime": "onnx", "pt2": "pt2"}


def _cfg(spec: dict):
    import inade  # noqa: PLC0415

    return inade.config("celeba", ngf=spec["ngf"], crop_size=spec["size"])


def _inputs(spec: dict, cfg) -> dict:
    from bench.bench_model_speed import face_batch  # noqa: PLC0415

    b = face_batch(spec, cfg)
    return {"label": b["label"], "inst": b["instance"], "noise": b["noise"], "z": b["z"]}


def build(spec: dict) -> dict:
    """The model (seed 0), its inputs and its eager output, to ``spec['work']``."""
    import inade  # noqa: PLC0415

    work = Path(spec["work"])
    cfg = _cfg(spec)
    torch.manual_seed(0)
    G = inade.Generator(cfg).eval()
    x = _inputs(spec, cfg)
    with torch.no_grad():
        y = G(x["label"], x["inst"], x["noise"], x["z"])
    torch.save({"G": G.state_dict(), "config": cfg.to_dict()}, work / "G.pt")
    torch.save({**x, "eager": y}, work / "inputs.pt")
    return {"params_M": sum(p.numel() for p in G.parameters()) / 1e6}


def export(spec: dict) -> dict:
    """Export ``G.pt`` to ``spec['format']`` through ``python -m inade.export``'s own code; seconds and MB."""
    from inade.export.__main__ import main  # noqa: PLC0415

    work = Path(spec["work"])
    out = work / f"G.{spec['format']}"
    t0 = time.perf_counter()
    code = main(["--checkpoint", str(work / "G.pt"), "--format", spec["format"], "--out", str(out),
                 "--max-instances", str(spec["max_instances"]), "--overwrite"])  # its own file of an earlier --work run
    if code != 0:
        raise RuntimeError(f"python -m inade.export exited {code}")
    return {"export_s": time.perf_counter() - t0, "file_MB": out.stat().st_size / 2**20}


def runner(spec: dict):
    """``(fn, load_s)``: one inference call of the path ``spec['path_name']`` on the saved inputs."""
    work = Path(spec["work"])
    x = torch.load(work / "inputs.pt")
    names = ("label", "inst", "noise", "z")
    t0 = time.perf_counter()
    if spec["path_name"] == "eager":
        from inade.cli import load_models  # noqa: PLC0415

        G = load_models(work / "G.pt")[0].eval()

        def fn():
            with torch.no_grad():
                return G(*(x[n] for n in names))
    elif spec["path_name"] == "onnxruntime":
        import onnxruntime as ort  # noqa: PLC0415

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = spec["threads"], 1
        if os.environ.get("OMP_WAIT_POLICY", "").lower() == "passive":  # the wait policy of the other paths
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(work / "G.onnx"), options, providers=["CPUExecutionProvider"])
        feed = {n: x[n].numpy() for n in names}

        def fn():
            return torch.from_numpy(session.run(None, feed)[0])
    else:
        package = torch._inductor.aoti_load_package(str(work / "G.pt2"))

        def fn():
            return package(*(x[n] for n in names))
    return fn, time.perf_counter() - t0, x["eager"]


def worker(spec: dict) -> dict:
    torch.set_num_threads(spec["threads"])
    if spec["what"] == "build":
        return build(spec)
    if spec["what"] == "export":
        return export(spec)
    fn, load_s, eager = runner(spec)
    for _ in range(spec["warmup"]):
        fn()
    before = common.usage_snapshot()
    seconds = common.time_calls(fn, warmup=0, calls=spec["calls"])
    after = common.usage_snapshot()
    y = fn()
    err = (y.float() - eager).abs().max().item() / eager.abs().max().item()
    cpu = (after["user_s"] + after["sys_s"] - before["user_s"] - before["sys_s"]) / spec["calls"]
    return {**common.sample_stats(seconds), "cpu_s_per_call": cpu, "load_s": load_s, "max_rel_err": err,
            "imports_inade": "inade" in sys.modules, "peak_rss_MB": after["maxrss_MB"]}


def run(args, work: Path, isolated=common.isolated) -> tuple[list[dict], list[str]]:
    """``(rows, notes)``: build, export each format, time each path, every step its own process."""
    module = "bench.bench_export"
    work.mkdir(parents=True, exist_ok=True)
    spec = {**common.model_spec(args, torch.device("cpu")), "work": str(work), "max_instances": args.max_instances}
    stamp = work / "spec.json"
    same = stamp.is_file() and json.loads(stamp.read_text()).get("spec") == spec
    exports = json.loads(stamp.read_text()).get("exports", {}) if same else {}
    if not same:
        built = isolated(module, {**spec, "what": "build"})
        if "error" in built:
            raise SystemExit(f"error: building the model failed: {built['error']}")
    for path, fmt in FORMATS.items():
        if path in args.paths and (fmt not in exports or "error" in exports[fmt]):
            exports[fmt] = isolated(module, {**spec, "what": "export", "format": fmt})
            print(f"  export {fmt:5s} " + (exports[fmt].get("error") or f"{exports[fmt]['export_s']:.0f} s, "
                  f"{exports[fmt]['file_MB']:.0f} MB"), flush=True)
            stamp.write_text(json.dumps({"spec": spec, "exports": exports}))
    best = {}
    for _ in range(getattr(args, "rounds", 1)):  # the paths one after another, each round; each path's best kept
        for path in args.paths:
            fmt = FORMATS.get(path)
            if fmt and "error" in exports.get(fmt, {}):
                r = {"error": f"export failed: {exports[fmt]['error']}"}
            else:
                r = isolated(module, {**spec, "what": "time", "path_name": path, "warmup": args.warmup,
                                      "calls": args.calls})
            if path not in best or ("min_ms" in r and r["min_ms"] < best[path].get("min_ms", float("inf"))):
                best[path] = r
    rows = []
    for path in args.paths:
        r, fmt = best[path], FORMATS.get(path)
        row = {"call": "G inference", "path": path, "precision": "fp32", "batch": 1, **r}
        if fmt and "export_s" in exports.get(fmt, {}):
            row.update(export_s=exports[fmt]["export_s"], file_MB=exports[fmt]["file_MB"])
        print(f"  {path:12s} " + (row.get("error") or f"min {row['min_ms']:.0f} ms, median {row['median_ms']:.0f} ms, "
              f"spread {row['spread']:.0%}, max rel. error {row['max_rel_err']:.1e}"), flush=True)
        rows.append(row)
    return with_speedups(rows), [fastest(rows)]


def with_speedups(rows: list[dict]) -> list[dict]:
    """Adds ``x_vs_eager_by_min`` / ``_by_median``: the eager row's time over each row's."""
    base = next((r for r in rows if r["path"] == "eager" and "min_ms" in r), None)
    out = [dict(r) for r in rows]
    for r in out:
        if base is not None and "min_ms" in r:
            r["x_vs_eager_by_min"] = base["min_ms"] / r["min_ms"]
            r["x_vs_eager_by_median"] = base["median_ms"] / r["median_ms"]
    return out


def fastest(rows: list[dict]) -> str:
    """One sentence: which path had the smallest min time (and median), here."""
    timed = [r for r in rows if "min_ms" in r]
    if not timed:
        return "no path ran"
    by_min = min(timed, key=lambda r: r["min_ms"])
    by_median = min(timed, key=lambda r: r["median_ms"])
    same = "" if by_min is by_median else f" (by median: {by_median['path']})"
    return f"fastest here: {by_min['path']}, min {by_min['min_ms']:.0f} ms{same}"


@common.interruptible
def main(argv=None) -> None:
    if common.worker_main(worker, argv):
        return
    p = common.model_parser(__doc__.split("\n\n")[0], size_help="output size (crop_size), square", calls=9)
    p.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    p.add_argument("--max-instances", type=int, default=32, help="the exported graphs' instance limit")
    p.add_argument("--rounds", type=int, default=1, metavar="N",
                   help="time the paths N times, one after another, and keep each path's fastest round")
    p.add_argument("--work", help="folder for the model and its exported files (reused when the options match)")
    p.add_argument("--name", default="export", help="results file name")
    p.add_argument("--no-write", action="store_true", help="print only; do not write bench/results")
    args = p.parse_args(argv)
    if args.calls < 1 or args.warmup < 0 or args.rounds < 1:
        raise SystemExit("error: --calls and --rounds must be at least 1 and --warmup at least 0")
    import inade  # noqa: PLC0415

    device = torch.device("cpu")
    with tempfile.TemporaryDirectory(prefix="inade-bench-export-") as tmp:
        rows, notes = run(args, Path(args.work) if args.work else Path(tmp))
    for r in rows:
        r.update(ngf=args.ngf, size=args.size, instances=args.instances, config="celeba")
    notes.insert(0, f"CelebAMask-HQ config, ngf={args.ngf}, {args.size}x{args.size}, B=1, {args.instances} instances, "
                    f"random weights; {args.threads} threads; each export and each row its own process, "
                    f"{args.warmup} warm-up + {args.calls} timed calls, each path's fastest of {args.rounds} "
                    f"round(s); eager ops: {inade.ops.resolve(device)} backend; OMP_WAIT_POLICY="
                    f"{os.environ.get('OMP_WAIT_POLICY', 'unset')} (passive: onnxruntime's threads do not spin either)")
    columns = ["call", "path", "min_ms", "median_ms", "spread", "x_vs_eager_by_min", "x_vs_eager_by_median",
               "cpu_s_per_call", "max_rel_err", "imports_inade", "load_s", "export_s", "file_MB", "peak_rss_MB",
               "load_before", "load_after", "error"]
    table = common.markdown_table(rows, columns)
    if args.no_write:
        print("\n" + table + "\n\n" + "\n".join(f"- {n}" for n in notes))
        return
    path, text = common.write_report(args.name, rows, device, notes, {}, "Exported generator", table)
    print("\n" + text)
    print(f"wrote {path} and {path.with_suffix('.md').name}")


if __name__ == "__main__":
    sys.exit(main())
