"""Whole-generator speed, side by side with the authors' public code: inference
(float32, and bfloat16 autocast) and a training forward+backward, time and peak memory.

Configuration: CelebAMask-HQ (``inade.config("celeba")``: 19 classes, 256×256, ngf 64,
noise_nc 64, z_dim 256), batch 1, a face-like layout of ``--instances`` instances.

Baseline, on the same weights (the public generator's own initialisation, loaded into
ours with :func:`inade.load_official`) and the same inputs:

* ``public code``: tzt101/INADE itself, from a checkout passed as ``--official-code DIR``
  (the project never contains it; torchvision and dill are stubbed where they do not
  import — its generator does not use them). It gets what its ``preprocess_input``
  builds (one-hot label ⊕ instance edges, one-hot instances) made beforehand, untimed,
  and ``noise``/``noise_ins`` passed explicitly (it draws them with ``x.get_device()``,
  which fails on a CPU).
* ``official-style`` (when no checkout is given): our modules with the three ops swapped
  for bench/official_style.py's re-implementations of the public code's approach.

Rows: ``G inference`` (eval, ``torch.no_grad``) in float32 and under
``torch.autocast(dtype=bfloat16)`` on both sides, ``E+G inference`` (encode a reference
image, generate with its per-instance styles; float32) and ``G train fwd+bwd`` (train mode:
batch statistics, one power iteration; loss ``mean(y²)``, backward; gradients cleared
untimed). The method is :mod:`bench.common`'s: every (path, call) in its own process,
``--warmup`` untimed calls then ``--calls`` timed ones, min, median and spread, the load
average before and after, peak extra memory (one more call, profiled); a speed-up only
between rows of the same precision; each row's share of the machine's float32 / bfloat16
``torch.mm`` peak (measured at the start, in its own process) from the call's FLOPs
(:mod:`inade.flops` on ours).

    python -m bench.bench_model_speed --official-code /path/to/INADE
    python -m bench.bench_model_speed --ngf 16 --calls 3                # quick, official-style
"""
from __future__ import annotations

import contextlib
import os
import sys

import torch

import inade
from bench import common, official_style

# ---------------------------------------------------------------------------
# The official-style network: the same modules with the ops swapped
# ---------------------------------------------------------------------------


def _official_modulation(x, inst, gamma, beta, *, running_mean=None, running_var=None, training=True,
                         momentum=0.1, eps=1e-5, process_group=None):
    if process_group is not None:
        raise ValueError("the official-style baseline has no synchronised batch norm")
    return official_style.modulation(x, inst, gamma, beta, running_mean=running_mean, running_var=running_var,
                                     training=training, momentum=momentum, eps=eps)


def _official_conv(x, inst, weight, bias=None, stride=1, padding=0, renorm=False):
    if renorm:
        raise ValueError("the official-style baseline has no partial-conv renormalisation")
    return official_style.conv2d_unfold(x, inst, weight, bias, stride, padding)


def official_replacements() -> dict[str, object]:
    """Op name -> official-style function with the op's signature (those bench/official_style.py has)."""
    out = {}
    if hasattr(official_style, "modulation"):
        out["instance_modulation"] = _official_modulation
    if hasattr(official_style, "avg_pool_loop"):
        out["instance_avg_pool"] = official_style.avg_pool_loop
    if hasattr(official_style, "conv2d_unfold"):
        out["instance_conv2d"] = _official_conv
    return out


@contextlib.contextmanager
def official_style_ops(replacements: dict[str, object] | None = None):
    """Within the block, every ``inade`` module attribute that *is* one of the three public op
    functions points to its official-style version instead (so ``from inade.ops import …`` at
    import time and ``inade.ops.<op>`` at call time both see it). Restored on exit."""
    import inade.ops as ops  # noqa: PLC0415

    replacements = official_replacements() if replacements is None else replacements
    fast = {getattr(ops, name): fn for name, fn in replacements.items()}
    patched = []
    for mod_name, mod in list(sys.modules.items()):
        if mod is None or not (mod_name == "inade" or mod_name.startswith("inade.")):
            continue
        for attr, value in list(vars(mod).items()):
            if callable(value) and value in fast:
                patched.append((mod, attr, value))
                setattr(mod, attr, fast[value])
    try:
        yield
    finally:
        for mod, attr, value in patched:
            setattr(mod, attr, value)


def face_layout(size: int, num_instances: int, label_nc: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A deterministic face-like ``[1, size, size]`` label and instance map: background, a face
    ellipse, then smaller ellipses (two share a class, like a pair of eyes)."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    yy, xx = yy.float() / size, xx.float() / size
    label = torch.zeros(size, size, dtype=torch.long)
    inst = torch.zeros(size, size, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    for l in range(1, num_instances):
        if l == 1:
            cy, cx, ry, rx = 0.5, 0.5, 0.42, 0.33
        else:
            cy, cx, ry, rx = (0.25 + 0.5 * torch.rand(2, generator=g)).tolist() + (0.04 + 0.06 * torch.rand(2, generator=g)).tolist()
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        cls = 1 + (l - 1) % (label_nc - 1) if l != 3 else 2  # instance 3 shares instance 2's class
        label[inside], inst[inside] = cls, l
    # ids must be compact: drop ids covered entirely by later shapes
    _, compact = torch.unique(inst, return_inverse=True)
    return label[None], compact.reshape(size, size)[None]


def _official(fn):
    def call():
        with official_style_ops():
            return fn()

    return call


# ---------------------------------------------------------------------------
# The two generators and their calls
# ---------------------------------------------------------------------------


def build_public(code_dir, cfg, seed: int = 0):
    """``((G, E), stubbed)``: the public generator and encoder (xavier init, as their
    ``init_weights``), or ``(None, reason)``."""
    try:
        gen, stubbed = official_style.import_public_code(code_dir)
        enc, _ = official_style.import_public_code(code_dir, "models.networks.encoder")
        torch.manual_seed(seed)
        G = gen.SPADEGenerator(official_style.public_options(cfg))
        E = enc.instanceAdaptiveEncoder(official_style.public_options(cfg))
        for m in (G, E):
            m.init_weights("xavier", cfg.init_variance)
        return (G, E), stubbed
    except Exception as err:  # noqa: BLE001
        return None, f"{type(err).__name__}: {err}"


def encoder_call(E, G, encode_then_generate) -> dict:
    """``{"E+G inference fp32": (None, fn)}``: encode the reference, generate with its styles."""

    def infer():
        E.eval(), G.eval()
        with torch.no_grad():
            return encode_then_generate()

    return {"E+G inference fp32": (None, infer)}


def public_remapped(G, E, seg, onehot, real, noise, z):
    """The public code's ``generate_fake`` with its encoder: ``z = [μ_γ, σ_γ, μ_β, σ_β]``
    (in the mode ``G`` is in)."""
    mu_g, logvar_g, mu_b, logvar_b = E(real, onehot)
    G.opt.use_vae = True
    try:
        return G(seg, z=[mu_g, torch.exp(0.5 * logvar_g), mu_b, torch.exp(0.5 * logvar_b)], input_instances=onehot,
                 noise=noise, noise_ins=z)
    finally:
        G.opt.use_vae = False


def check_compat_swap(code_dir, seed: int = 0) -> str:
    """inade.compat swapped into the public code itself: its generator and encoder built with
    ``ILADE``, ``InstanceAwareConv2d`` and ``instAvgPooling`` from :mod:`inade.compat`, loaded with
    the unswapped models' state dicts, E+G forward and backward in float64 (CelebAMask-HQ config
    at ngf 4, 64×64) in eval and train mode. Returns a one-line summary."""
    from inade import compat  # noqa: PLC0415

    cfg = inade.config("celeba", ngf=4, crop_size=64)
    gen, _ = official_style.import_public_code(code_dir)
    enc, _ = official_style.import_public_code(code_dir, "models.networks.encoder")
    arch = sys.modules["models.networks.architecture"]
    saved = (arch.ILADE, enc.InstanceAwareConv2d, enc.instanceAdaptiveEncoder.instAvgPooling)
    torch.manual_seed(seed)
    public = [gen.SPADEGenerator(official_style.public_options(cfg)),
              enc.instanceAdaptiveEncoder(official_style.public_options(cfg))]
    for m in public:
        m.init_weights("xavier", 0.1)
    arch.ILADE, enc.InstanceAwareConv2d = compat.ILADE, compat.InstanceAwareConv2d
    enc.instanceAdaptiveEncoder.instAvgPooling = staticmethod(compat.instAvgPooling)
    try:
        swapped = [gen.SPADEGenerator(official_style.public_options(cfg)),
                   enc.instanceAdaptiveEncoder(official_style.public_options(cfg))]
    finally:
        arch.ILADE, enc.InstanceAwareConv2d, enc.instanceAdaptiveEncoder.instAvgPooling = saved
    problems = [str(m.load_state_dict(p.state_dict())) for m, p in zip(swapped, public)]
    label, inst = face_layout(64, 10, cfg.label_nc)
    seg, onehot = official_style.public_generator_inputs(label, inst, cfg, torch.float64)
    g = torch.Generator().manual_seed(seed)
    real = torch.rand(1, 3, 64, 64, generator=g, dtype=torch.float64) * 2 - 1
    noise = torch.randn(1, onehot.shape[1], 2, cfg.noise_nc, generator=g, dtype=torch.float64)
    z = torch.randn(1, cfg.z_dim, generator=g, dtype=torch.float64)
    worst = {}
    for train in (False, True):
        results = []
        for G, E in (public, swapped):
            G.double().train(train), E.double().train(train)
            y = public_remapped(G.train(train), E, seg, onehot, real, noise, z)
            params = list(G.parameters()) + list(E.parameters())
            grads = torch.autograd.grad(y.square().sum(), params, allow_unused=True)
            results.append((y, [t if t is not None else torch.zeros_like(p) for t, p in zip(grads, params)]))
        (ya, ga), (yb, gb) = results
        scale = max(t.abs().max().item() for t in ga)
        worst["train" if train else "eval"] = ((ya - yb).abs().max().item(),
                                               max((a - b).abs().max().item() for a, b in zip(ga, gb)) / scale)
    return (f"inade.compat swapped into the public code (keys: {'; '.join(problems)}), float64 E+G: "
            + ", ".join(f"{k} max |Δy| {a:.1e}, max |Δgrad| {b:.1e} of the largest" for k, (a, b) in worst.items()))


def generator_calls(G, forward) -> dict:
    """``{call: (setup, fn)}`` for one generator; ``forward()`` runs it once on the inputs."""

    def infer():
        G.eval()
        with torch.no_grad():
            return forward()

    def infer_bf16():
        G.eval()
        with torch.no_grad(), common.precision_context("bf16", next(G.parameters()).device):
            return forward()

    def train():
        G.train()
        y = forward()
        y.float().square().mean().backward()
        return y

    def clear():
        G.zero_grad(set_to_none=True)

    return {"G inference fp32": (None, infer), "G inference bf16": (None, infer_bf16),
            "G train fwd+bwd": (clear, train)}


def op_summary(device) -> list[dict]:
    """The fused ops' float32 forward+backward rows from the op benchmarks' committed JSON
    (``bench/results/<device>/instance_*.json``), with the speed-up over the official-style
    path and, where the same shape was measured at ``L = 1``, the time relative to it."""
    import json  # noqa: PLC0415
    import re  # noqa: PLC0415

    rows = []
    for path in sorted((common.RESULTS / common.device_name(device)).glob("instance_*.json")):
        fused = [r for r in json.loads(path.read_text())["rows"]
                 if r.get("backend") == common.fused_backend(device) and r.get("dtype") == "float32"
                 and "fwd_bwd_ms" in r]
        key = lambda r, shape: (r["op"], shape, r.get("layout"), r.get("maps"))  # noqa: E731
        by = {key(r, r["shape"]): r for r in fused}
        for r in fused:
            base = by.get(key(r, re.sub(r"-L\d+", "-L1", r["shape"])))
            rows.append({"op": r["op"], "shape": r["shape"] + (f" {r['layout']}" if r.get("layout") else ""),
                         "fwd_bwd_ms": r["fwd_bwd_ms"], "x_vs_official": r.get("x_vs_official"),
                         "vs_L1": r["fwd_bwd_ms"] / base["fwd_bwd_ms"] if base is not None and base is not r else None})
    return rows


CALLS = ("G inference fp32", "G inference bf16", "G train fwd+bwd", "E+G inference fp32")


def face_batch(spec: dict, cfg, batch: int = 1) -> dict:
    """``{label, instance [B, H, W], image [B, 3, H, W], noise [B, L, 2, noise_nc], z [B, z_dim]}``
    on the CPU: :func:`face_layout` per sample, a random image, and the noise and ``z`` passed to
    both generators (the public one draws them with ``x.get_device()``, which fails on a CPU);
    the same in every worker (fixed seed)."""
    label, inst = face_layout(spec["size"], spec["instances"], cfg.label_nc)
    L = int(inst.max()) + 1
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(batch, L, 2, cfg.noise_nc, generator=g)
    z = torch.randn(batch, cfg.z_dim, generator=g)
    image = torch.rand(batch, 3, spec["size"], spec["size"], generator=g) * 2 - 1
    return {"label": label.expand(batch, -1, -1).contiguous(), "instance": inst.expand(batch, -1, -1).contiguous(),
            "image": image, "noise": noise, "z": z}


def _setup(spec: dict):
    """``(cfg, device, label, inst, noise, z, real)``: the same inputs in every worker."""
    device = torch.device(spec["device"])
    cfg = inade.config("celeba", ngf=spec["ngf"], crop_size=spec["size"])
    b = {k: t.to(device) for k, t in face_batch(spec, cfg).items()}
    return cfg, device, b["label"], b["instance"], b["noise"], b["z"], b["image"]


def _paths(spec: dict, which: tuple[str, ...]):
    """``{path: calls}`` for the paths in ``which`` (``ours``, ``public code``, ``official-style``);
    ours loads the public code's initial weights when a checkout is given."""
    cfg, device, label, inst, noise, z, real = _setup(spec)
    out = {}
    public = None
    if spec.get("official_code"):
        models, info = build_public(spec["official_code"], cfg)
        if models is None:
            raise RuntimeError(f"the public code did not build: {info}")
        public, public_E = (m.to(device) for m in models)
    if "ours" in which or "official-style" in which:
        G, E = inade.Generator(cfg), inade.NoiseEncoder(cfg)
        if public is not None:
            inade.load_official(G, public.state_dict())
            inade.load_official(E, public_E.state_dict())
        G, E = G.to(device), E.to(device)
        ours = generator_calls(G, lambda: G(label, inst, noise=noise, z=z))
        ours.update(encoder_call(E, G, lambda: G(label, inst, noise=noise, z=z, remap=E(real, inst))))
        out["ours"] = ours
        out["official-style"] = {name: (setup, _official(fn)) for name, (setup, fn) in ours.items()}
    if "public code" in which:
        seg, onehot = official_style.public_generator_inputs(label, inst, cfg)
        base = generator_calls(public, lambda: public(seg, input_instances=onehot, noise=noise, noise_ins=z))
        base.update(encoder_call(public_E, public, lambda: public_remapped(public, public_E, seg, onehot, real, noise, z)))
        out["public code"] = base
    return out


def worker(spec: dict) -> dict:
    """One process: ``peaks``, ``flops`` (of each call of ours), ``notes`` (the public code's
    images against ours, the compat swap) or ``time`` (one path, one call)."""
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    if spec["what"] == "peaks":
        return {"peaks": common.measure_peaks(device)}
    if spec["what"] == "flops":
        from inade import flops  # noqa: PLC0415

        calls = _paths({**spec, "official_code": None}, ("ours",))["ours"]
        out = {}
        for name, (setup, fn) in calls.items():
            if setup:
                setup()
            try:
                c = flops.count(fn)
            except Exception:  # noqa: BLE001 - a call that cannot run is reported by its timing row
                continue
            out[name] = float(c["conv_linear"] + c["inade_ops"])
        return {"flops": out}
    if spec["what"] == "notes":
        return {"notes": agreement_notes(spec)}
    path = spec["path_name"]
    setup, fn = _paths(spec, (path,))[path][spec["call"]]
    sync = (lambda: common.sync(device))
    seconds = common.time_calls(fn, warmup=spec["warmup"], calls=spec["calls"], sync=sync, setup=setup)
    if setup:
        setup()
    peak = common.peak_extra_bytes(fn, device) / 2**20
    return {**common.sample_stats(seconds), "peak_MB": peak, "samples_s": seconds}


def agreement_notes(spec: dict) -> list[str]:
    """The float32 images of both codes, ours under bfloat16 autocast against float32, and
    inade.compat swapped into the public code (correctness, not timing: both in one process)."""
    base_path = "public code" if spec.get("official_code") else "official-style"
    paths = _paths(spec, ("ours", base_path))
    ours, base = paths["ours"], paths[base_path]
    bf16_ok, why = common.bf16_supported(torch.device(spec["device"]))
    with torch.no_grad():
        y32 = ours["G inference fp32"][1]().float()
        y16 = ours["G inference bf16"][1]().float() if bf16_ok else None  # minutes without bf16 arithmetic
        yb = base["G inference fp32"][1]().float()
        eg = ours["E+G inference fp32"][1]().float() - base["E+G inference fp32"][1]().float()
    notes = [f"max |ours - {base_path}| of the float32 image: {(y32 - yb).abs().max():.2e} (G), {eg.abs().max():.2e} (E+G)"]
    if y16 is None:
        notes.append(f"bfloat16 autocast image error not measured: {why}")
    else:
        err = (y16 - y32).abs()
        notes.append(f"bfloat16 autocast image error vs float32 (ours): max {err.max():.2e}, mean {err.mean():.2e} "
                     "(initialised weights, not a trained model)")
    if spec.get("official_code"):
        notes.append(check_compat_swap(spec["official_code"]))
    return notes


def precision_of(call: str) -> str:
    return "bf16" if "bf16" in call else "fp32"


def run(args, isolated=common.isolated) -> tuple[list[dict], dict, list[str]]:
    """``(rows, peaks, notes)``: every (path, call) through ``isolated`` (a fake in tests)."""
    device = common.default_device()
    base_spec = common.model_spec(args, device)
    module = "bench.bench_model_speed"
    peaks = isolated(module, {**base_spec, "what": "peaks"}).get("peaks", {})
    flops = isolated(module, {**base_spec, "what": "flops"}).get("flops", {})
    notes_result = isolated(module, {**base_spec, "what": "notes"})
    notes = notes_result.get("notes") or [f"agreement check failed: {notes_result.get('error')}"]
    base_path = "public code" if args.official_code else "official-style"
    rows = []
    bf16_ok, why = common.bf16_supported(device)
    bar = common.progress(desc="model speed rows", total=2 * len(args.calls_to_run), unit="row")
    for call in args.calls_to_run:
        precision = precision_of(call)
        if precision == "bf16" and not bf16_ok:  # minutes per row without bf16 arithmetic: skipped, with the reason
            rows.append({"call": call.replace(" bf16", ""), "path": "ours", "precision": precision, "batch": 1,
                         "skipped": why})
            print(f"  {call:20s} {why}", flush=True)
            bar.update(2)
            continue
        for path in (base_path, "ours"):
            r = isolated(module, {**base_spec, "what": "time", "path_name": path, "call": call,
                                  "warmup": args.warmup, "calls": args.calls})
            bar.update()
            r.pop("samples_s", None)
            row = {"call": call.replace(" fp32", "").replace(" bf16", ""), "path": path, "precision": precision,
                   "batch": 1, **r}
            if "error" not in r and flops.get(call):
                row["gflop"] = flops[call] / 1e9
                row["flop_fraction"] = common.fraction_of_peak(
                    flops[call], r["min_ms"] / 1e3, peaks.get(f"{precision}_flops"))
            print(f"  {call:20s} {path:14s} " + (row.get("error") or f"min {row['min_ms']:.0f} ms, median "
                  f"{row['median_ms']:.0f} ms, spread {row['spread']:.0%}, peak extra {row['peak_MB']:.0f} MB"),
                  flush=True)
            rows.append(row)
    bar.close()
    notes.append(peaks.get("method", "peaks not measured"))
    return common.compare_same_precision(rows, base=base_path), peaks, notes


@common.interruptible
def main(argv=None) -> None:
    if common.worker_main(worker, argv):
        return
    p = common.model_parser(__doc__.split("\n\n")[0], size_help="output size (crop_size), square", calls=9)
    p.add_argument("--only", dest="calls_to_run", nargs="+", default=list(CALLS), choices=CALLS, metavar="CALL")
    p.add_argument("--name", default="model_speed", help="results file name")
    args = p.parse_args(argv)
    if args.calls < 1 or args.warmup < 0:
        raise SystemExit("error: --calls must be at least 1 and --warmup at least 0")
    device = common.default_device()
    rows, peaks, notes = run(args)
    for r in rows:
        r.update(ngf=args.ngf, size=args.size, instances=args.instances, config="celeba")
    notes.insert(0, f"CelebAMask-HQ config, ngf={args.ngf}, {args.size}x{args.size}, B=1, {args.instances} instances, "
                    f"{args.threads} threads; each row its own process, {args.warmup} warm-up + {args.calls} timed "
                    f"calls; ops: {inade.ops.resolve(device)} backend; OMP_WAIT_POLICY="
                    f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    table = common.markdown_table(rows, ["call", "path", "precision", "min_ms", "median_ms", "spread", "peak_MB",
                                         "flop_fraction", "x_by_min", "x_by_median", "memory_ratio", "load_before",
                                         "load_after", "error"])
    ops = op_summary(device)
    more = ("\n## The ops, forward+backward (float32, from the op benchmarks' JSON)\n\n"
            + common.markdown_table(ops, ["op", "shape", "fwd_bwd_ms", "x_vs_official", "vs_L1"]) + "\n") if ops else ""
    path, text = common.write_report(args.name, rows, device, notes, peaks, "Model speed", table, more)
    print("\n" + text)
    print(f"wrote {path} and {path.with_suffix('.md').name}")


if __name__ == "__main__":
    sys.exit(main())
