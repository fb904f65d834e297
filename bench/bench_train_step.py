"""The whole training iteration, ours against the authors' public code: one G step
(G and E on GAN + feature matching + VGG + KL, D frozen, Adam) then one D step.

    python -m bench.bench_train_step --official-code /path/to/INADE
    python -m bench.bench_train_step --ngf 16 --size 64 --calls 3      # short, without the public code

* ours: :meth:`inade.training.trainer.Trainer.train_step` (the loop ``train.py`` runs);
* public code: tzt101/INADE's ``Pix2PixTrainer.run_generator_one_step`` then
  ``run_discriminator_one_step`` from a checkout passed as ``--official-code DIR`` (never
  part of this project). Where no checkout is given, only ours is measured.

Same weights and same batch on both sides: a preparatory process builds the public G, E
(xavier, as its ``init_weights``) and D with the public code, a random VGG19 in
torchvision's layout (no pretrained weights are downloaded; the loss is on for both),
and writes them to one file that every worker loads (ours through
:func:`inade.load_official`). The batch: CelebAMask-HQ (19 classes, 256², ngf 64), a
face-like layout of ``--instances`` instances per sample, a random image, and fixed noise
and ``z`` passed to both generators (``bench_model_speed.face_batch``).

The method (:mod:`bench.common`): each (side, precision, batch) in its own process,
``--warmup`` untimed iterations then ``--calls`` timed ones; min, median and spread; the
1-min load average before and after; minor page faults and system seconds per iteration;
the process's peak resident memory (CPU) or the allocator's peak (GPU). Precision is the
same on both sides: float32 against float32, bfloat16 autocast around the whole step on
both sides (the public code's own ``--use_amp`` is CUDA float16 and is not used).
Batches: 1, 2, and for each side the largest batch whose peak memory fits
``--memory-budget-mb`` (predicted from the line through its batch-1 and batch-2 peaks,
then measured). The machine's peaks (:func:`common.measure_peaks`) are measured in their
own process at the start; each row's ``flop_fraction`` is the iteration's FLOPs
(:mod:`inade.flops` on ours: convolutions, matrix products and our ops — the arithmetic
both sides must do) over its min time and the peak of its precision.
Writes ``bench/results/<device>/train_step.json`` and ``.md``.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile

import torch

from bench import common, official_style
from bench.bench_model_speed import face_batch

WEIGHTS_ENV = "INADE_BENCH_TRAIN_WEIGHTS"


# ---------------------------------------------------------------------------
# The batch and the shared weights
# ---------------------------------------------------------------------------


def model_config(spec: dict):
    import inade  # noqa: PLC0415

    return inade.config("celeba", ngf=spec["ngf"], crop_size=spec["size"], dataset_mode="synthetic")


def public_train_options(cfg, **overrides):
    """The public code's training options for ``cfg`` (CPU, no AMP, VGG and KL on)."""
    return official_style.public_options(
        cfg, use_vae=True, isTrain=True, continue_train=False, gpu_ids=[], use_amp=False, netD=cfg.netD,
        netD_subarch="n_layer", ndf=cfg.ndf, num_D=cfg.num_D, n_layers_D=cfg.n_layers_D, norm_D=cfg.norm_D,
        norm_E="spectralinstance", output_nc=cfg.output_nc, gan_mode=cfg.gan_mode, no_ganFeat_loss=False,
        no_vgg_loss=False, lambda_feat=cfg.lambda_feat, lambda_vgg=cfg.lambda_vgg, lambda_kld=cfg.lambda_kld,
        lr=cfg.lr, beta1=cfg.beta1, beta2=cfg.beta2, no_TTUR=False, init_type="xavier",
        init_variance=cfg.init_variance, which_epoch="latest", **overrides)


def prepare_weights(spec: dict) -> dict:
    """The preparatory worker: the public G, E, D (the public code's own initialisation) and a
    random VGG19, saved to ``spec["path"]``."""
    from inade.models.vgg import _features  # noqa: PLC0415

    cfg = model_config(spec)
    torch.manual_seed(spec.get("seed", 0))
    vgg = _features()
    with official_style.public_code_on_cpu(spec["official_code"], vgg):
        from models.pix2pix_model import Pix2PixModel  # noqa: PLC0415

        model = Pix2PixModel(public_train_options(cfg))
    state = {"G": model.netG.state_dict(), "E": model.netIE.state_dict(), "D": model.netD.state_dict(),
             "vgg": {f"features.{k}": v for k, v in vgg.state_dict().items()}}
    torch.save(state, spec["path"])
    return {"ok": True}


# ---------------------------------------------------------------------------
# The two iterations
# ---------------------------------------------------------------------------


def ours_step(spec: dict, cfg, weights: dict | None):
    """``(step(), trainer)``: one ``Trainer.train_step`` on the fixed batch."""
    import inade  # noqa: PLC0415
    from inade.models.losses import VGGLoss  # noqa: PLC0415
    from inade.models.vgg import VGG19  # noqa: PLC0415
    from inade.training.options import parse_options  # noqa: PLC0415
    from inade.training.trainer import Trainer  # noqa: PLC0415

    # train_step never writes to the checkpoint folder: a temporary one, gone once the trainer is built
    with tempfile.TemporaryDirectory(prefix="inade-bench-") as checkpoints_dir:
        opt, _, _ = parse_options(["--dataset_mode", "synthetic", "--synthetic_size", str(max(4, spec["batch"])),
                                   "--nThreads", "0", "--batchSize", str(spec["batch"]), "--gpu_ids", "-1",
                                   "--checkpoints_dir", checkpoints_dir])
        with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):  # "no VGG weights": set below
            trainer = Trainer(opt, cfg, device=spec["device"], log=lambda *a: None)
    vgg = VGG19()
    if weights is not None:
        inade.load_official(trainer.G, weights["G"])
        inade.load_official(trainer.E, weights["E"])
        trainer.D.load_state_dict(weights["D"])
        vgg.load_torchvision_state_dict(weights["vgg"])
    trainer.crit.vgg_loss = VGGLoss(vgg.to(trainer.device))
    trainer.amp_dtype = torch.bfloat16 if spec["precision"] == "bf16" else None
    b = face_batch(spec, cfg, spec["batch"])
    dev = trainer.device
    batch = {"label": b["label"].to(dev), "instance": b["instance"].to(dev), "image": b["image"].to(dev),
             "index": torch.arange(spec["batch"])}
    noise, z = b["noise"].to(dev), b["z"].to(dev)
    trainer.latents = lambda indices, num_instances, which: (noise, z)  # the same latents as the public side
    return (lambda: trainer.train_step(batch)), trainer


class _FixedLatents(torch.nn.Module):
    """The public generator with ``noise`` / ``noise_ins`` passed (it draws them on ``x.get_device()``)."""

    def __init__(self, netG, noise, z):
        super().__init__()
        self.netG, self.noise, self.z = netG, noise, z

    def forward(self, *args, **kwargs):
        return self.netG(*args, noise=self.noise, noise_ins=self.z, **kwargs)


def public_step(spec: dict, cfg, weights: dict):
    """``(step(), trainer)``: the public ``Pix2PixTrainer``'s G step then D step on the fixed batch."""
    from inade.models.vgg import _features  # noqa: PLC0415

    vgg = _features()
    vgg.load_state_dict({k[len("features."):]: v for k, v in weights["vgg"].items()})
    with official_style.public_code_on_cpu(spec["official_code"], vgg), contextlib.redirect_stdout(sys.stderr):
        from trainers.pix2pix_trainer import Pix2PixTrainer  # noqa: PLC0415

        trainer = Pix2PixTrainer(public_train_options(cfg))
    model = trainer.pix2pix_model
    model.netG.load_state_dict(weights["G"])
    model.netIE.load_state_dict(weights["E"])
    model.netD.load_state_dict(weights["D"])
    b = face_batch(spec, cfg, spec["batch"])
    model.netG = _FixedLatents(model.netG, b["noise"], b["z"])
    device = torch.device(spec["device"])
    model.to(device)
    data = {"label": b["label"][:, None].to(device), "instance": b["instance"][:, None].to(device),
            "image": b["image"].to(device), "sketch": None}

    def step():
        with common.precision_context(spec["precision"], device):
            trainer.run_generator_one_step(dict(data))
            trainer.run_discriminator_one_step(dict(data))

    return step, trainer


def iteration_flops(spec: dict, cfg) -> float:
    """FLOPs of one of our iterations (float32, :func:`inade.flops.count`: convolutions and
    matrix products as 2·MACs plus our ops)."""
    from inade import flops  # noqa: PLC0415

    step, _ = ours_step({**spec, "precision": "fp32"}, cfg, None)
    counted = flops.count(step)
    return float(counted["conv_linear"] + counted["inade_ops"])


def measure(spec: dict) -> dict:
    """One worker: ``spec["what"]`` is ``prepare``, ``peaks``, ``flops`` or ``step`` (one side,
    precision and batch, timed)."""
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    if spec["what"] == "prepare":
        return prepare_weights(spec)
    if spec["what"] == "peaks":
        return {"peaks": common.measure_peaks(device), "machine": common.machine_info(device)}
    cfg = model_config(spec)
    if spec["what"] == "flops":
        return {"flops": iteration_flops(spec, cfg)}
    weights = torch.load(spec["path"], weights_only=True) if spec.get("path") else None
    build = ours_step if spec["path_name"] == "ours" else public_step
    step, _ = build(spec, cfg, weights)
    del weights
    sync = (lambda: common.sync(device))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = common.usage_snapshot()
    seconds = common.time_calls(step, warmup=spec["warmup"], calls=spec["calls"], sync=sync)
    usage = common.usage_per_call(before, common.usage_snapshot(), spec["warmup"] + spec["calls"])
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else usage["peak_rss_MB"]
    return {**common.sample_stats(seconds), **usage, "peak_MB": peak, "samples_s": seconds}


# ---------------------------------------------------------------------------
# The parent: every measurement in its own process
# ---------------------------------------------------------------------------


def budget_batch(peak_b1: float, peak_b2: float, budget: float, limit: int = 64) -> int:
    """The largest batch whose peak memory, on the line through the batch-1 and batch-2 peaks,
    stays within ``budget`` (at least 1)."""
    per_sample = max(peak_b2 - peak_b1, 1e-9)
    return int(max(1, min(limit, 1 + (budget - peak_b1) // per_sample)))


def row_of(result: dict, side: str, precision: str, batch: int, flops_b1: float | None, peaks: dict) -> dict:
    row = {"call": "train iteration (G step + D step)", "path": side, "precision": precision, "batch": batch,
           **{k: v for k, v in result.items() if k != "samples_s"}}
    if "error" not in result:
        row["images_per_s"] = batch / (result["min_ms"] / 1e3)
        peak = peaks.get(f"{precision}_flops")
        if flops_b1:
            row["gflop"] = flops_b1 * batch / 1e9
            row["flop_fraction"] = common.fraction_of_peak(flops_b1 * batch, result["min_ms"] / 1e3, peak)
    return row


def run(args, isolated=common.isolated) -> tuple[list[dict], dict, list[str]]:
    """``(rows, peaks, notes)`` of the whole benchmark; ``isolated`` runs one worker (a fake in tests)."""
    device = common.default_device()
    base = common.model_spec(args, device)
    module = "bench.bench_train_step"
    notes = []
    peaks_result = isolated(module, {**base, "what": "peaks"})
    peaks = peaks_result.get("peaks", {})
    path = None
    sides = ["ours"]
    # the shared weights (hundreds of MB) are not left behind, nor their folder when prepare fails
    weights_dir = tempfile.TemporaryDirectory(prefix="inade-bench-") if args.official_code else None
    if weights_dir is not None:
        path = os.path.join(weights_dir.name, "weights.pt")
        prep = isolated(module, {**base, "what": "prepare", "path": path})
        if "error" in prep:
            notes.append(f"public code not run: {prep['error']}")
            path = None
        else:
            sides.append("public code")
    flops_b1 = isolated(module, {**base, "what": "flops", "batch": 1, "precision": "fp32"}).get("flops")
    rows = []
    bar = common.progress(desc="train step rows", unit="row")

    def one(side, precision, batch, calls=None):
        spec = {**base, "what": "step", "path": path, "path_name": side, "precision": precision, "batch": batch,
                "warmup": args.warmup, "calls": calls or args.calls}
        result = isolated(module, spec)
        bar.update()
        row = row_of(result, side, precision, batch, flops_b1, peaks)
        print(f"  {side:12s} {precision} B{batch}: " + (row.get("error") or
              f"min {row['min_ms']:.0f} ms, median {row['median_ms']:.0f} ms, spread {row['spread']:.0%}, "
              f"peak {row['peak_MB']:.0f} MB"), flush=True)
        print("row " + json.dumps(row), file=sys.stderr, flush=True)  # a record if the run is cut off
        rows.append(row)
        return row

    bf16_ok, why = common.bf16_supported(device)
    for precision in args.precisions:
        if precision == "bf16" and not bf16_ok:  # minutes per row without bf16 arithmetic: skipped, with the reason
            rows.append({"call": "train iteration (G step + D step)", "path": "ours", "precision": precision,
                         "batch": 1, "skipped": why})
            print(f"  {why}", flush=True)
            continue
        budget = args.memory_budget_mb
        for side in reversed(sides):  # the public code first: its batch-2 peak is the default budget
            r1, r2 = one(side, precision, 1), one(side, precision, 2)
            if "error" in r1 or "error" in r2:
                continue
            if budget is None:
                budget = r2["peak_MB"] if side == "public code" else args.fallback_budget_mb
                notes.append(f"{precision}: memory budget {budget:.0f} MB"
                             + (" (the public code's peak at batch 2)" if side == "public code" else ""))
            b = budget_batch(r1["peak_MB"], r2["peak_MB"], budget, args.max_batch)
            r = one(side, precision, b, calls=args.budget_calls) if b > 2 else (r1 if b == 1 else r2)
            # The line is a prediction: a batch whose measured peak is over the budget does not
            # count; step down until one fits (batch 2 was measured already).
            while b > 2 and "error" not in r and r["peak_MB"] > budget:
                b -= 1
                r = one(side, precision, b, calls=args.budget_calls) if b > 2 else r2
            r["budget_batch"], r["budget_MB"] = True, round(budget)
    bar.close()
    if weights_dir is not None:
        weights_dir.cleanup()
    notes.append(peaks.get("method", "peaks not measured: " + peaks_result.get("error", "?")))
    return rows, peaks, notes


def summarize(rows: list[dict]) -> list[dict]:
    """Same-precision ratios at equal batch, and per precision the budget batches' throughput ratio."""
    out = common.compare_same_precision(rows, base="public code")
    for precision in {r["precision"] for r in rows}:
        pick = {r["path"]: r for r in out if r.get("budget_batch") and r["precision"] == precision}
        if {"ours", "public code"} <= set(pick) and all("images_per_s" in r for r in pick.values()):
            o, p = pick["ours"], pick["public code"]
            o["budget_x_images_per_s"] = o["images_per_s"] / p["images_per_s"]
            o["budget_x_batch"] = o["batch"] / p["batch"]
    return out


COLUMNS = ["path", "precision", "batch", "budget_batch", "min_ms", "median_ms", "spread", "images_per_s", "peak_MB",
           "flop_fraction", "x_by_min", "x_by_median", "memory_ratio", "minor_faults_per_call", "sys_s_per_call",
           "load_before", "load_after", "error"]


@common.interruptible
def main(argv=None) -> int:
    if common.worker_main(measure, argv):
        return 0
    p = common.model_parser(__doc__.split("\n\n")[0], size_help="crop_size (square)", calls=7)
    p.add_argument("--budget-calls", type=int, default=3, help="timed calls at the memory-budget batch")
    p.add_argument("--precisions", nargs="+", default=list(common.PRECISIONS), choices=common.PRECISIONS)
    p.add_argument("--memory-budget-mb", type=float, default=None,
                   help="peak memory (process RSS on CPU, allocator peak on GPU) the budget batch must fit in "
                        "(default: the public code's peak at batch 2 in the same precision, so that its budget "
                        "batch is 2 and ours is the largest batch that fits the same memory)")
    p.add_argument("--fallback-budget-mb", type=float, default=4096.0, help="the budget without the public code")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--name", default="train_step")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    if args.calls < 1 or args.warmup < 0 or args.budget_calls < 1:
        raise SystemExit("error: --calls and --budget-calls must be at least 1, --warmup at least 0")
    rows, peaks, notes = run(args)
    rows = summarize(rows)
    for r in rows:
        r.update(ngf=args.ngf, size=args.size, instances=args.instances, config="celeba")
    notes.insert(0, f"CelebAMask-HQ config, ngf {args.ngf}, {args.size}x{args.size}, {args.instances} instances, "
                    f"VGG19 loss on (random weights, same on both sides), {args.threads} threads; each row its own "
                    f"process, {args.warmup} warm-up + {args.calls} timed iterations ({args.budget_calls} at a budget "
                    f"batch > 2); load average on {os.cpu_count()} cores before/after each row in the table; "
                    f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    table = common.markdown_table(rows, COLUMNS)
    print(table)
    if args.no_write:
        return 0
    device = common.default_device()
    path, _ = common.write_report(args.name, rows, device, notes, peaks, "Training iteration", table)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
