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
``torch.autocast(dtype=bfloat16)`` — ours in bfloat16 is compared with the baseline in
float32 (as published) and its image error against our float32 image is stated —
``E+G inference`` (encode a reference image, generate with its per-instance styles;
float32) and ``G train fwd+bwd`` (train mode: batch statistics, one power iteration; loss
``mean(y²)``, backward; gradients cleared untimed). Times are medians of alternating
single calls (ours, baseline, ours, ...), so both paths see the same machine load.

    python -m bench.bench_model_speed --official-code /path/to/INADE
    python -m bench.bench_model_speed --ngf 16 --min-run-time 1        # quick, official-style
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time

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


def interleaved_medians(fns: dict[str, object], device: torch.device, min_run_time: float,
                        min_samples: int = 5, setup=None) -> dict[str, float]:
    """Median milliseconds of each ``fns[path]()``, sampled in alternation (one call of each path per
    round, after a warm-up call) until every path has ``min_samples`` samples and ``min_run_time``
    seconds. The CPU of this machine is shared: alternating puts both paths under the same load,
    where back-to-back blocks of ``torch.utils.benchmark`` runs would not. ``setup()`` runs untimed
    before every call."""
    setup = setup or (lambda: None)
    samples = {path: [] for path in fns}
    for fn in fns.values():
        setup()
        fn()
    while any(len(v) < min_samples or sum(v) < min_run_time for v in samples.values()):
        for path, fn in fns.items():
            setup()
            common.sync(device)
            t0 = time.perf_counter()
            fn()
            common.sync(device)
            samples[path].append(time.perf_counter() - t0)
    return {path: statistics.median(v) * 1e3 for path, v in samples.items()}


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
        with torch.no_grad(), torch.autocast(next(G.parameters()).device.type, dtype=torch.bfloat16):
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


def measure(ours: dict, base: dict, base_path: str, device, min_run_time: float) -> list[dict]:
    """Rows of median time and peak extra memory for every call of ``ours`` (and of ``base``)."""
    rows = []
    for name, (setup, fn) in ours.items():
        paths = {"ours": fn}
        if name in base:
            paths[base_path] = base[name][1]
        both = (lambda s1, s2: (lambda: (s1 and s1(), s2 and s2())))(setup, base.get(name, (None,))[0])
        load = os.getloadavg()[0]
        medians = interleaved_medians(paths, device, min_run_time, min_samples=3, setup=both)
        for path, call in paths.items():
            both()
            peak = common.peak_extra_bytes(call, device)
            rows.append({"call": name, "path": path, "median_ms": medians[path], "peak_extra_MB": peak / 2**20,
                         "load_1min": round((load + os.getloadavg()[0]) / 2, 2)})
            print(f"  {name:18s} {path:15s} {medians[path]:9.1f} ms  {peak / 2**20:8.1f} MB", flush=True)
    return rows


def compare(rows: list[dict], base_path: str) -> None:
    """Speed-up and memory ratio of each 'ours' row against the baseline in float32 for
    inference (the public code runs in float32) and the same call otherwise."""
    by = {(r["call"], r["path"]): r for r in rows}
    for r in rows:
        if r["path"] != "ours":
            continue
        ref_call = "G inference fp32" if r["call"].startswith("G inference") else r["call"]  # bf16 vs fp32
        b = by.get((ref_call, base_path))
        if b is not None:
            r["vs"] = f"{base_path} {ref_call.split()[-1]}"
            r["speedup"] = b["median_ms"] / r["median_ms"]
            r["memory_ours_over_baseline"] = r["peak_extra_MB"] / max(b["peak_extra_MB"], 1e-9)


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


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--official-code", metavar="DIR", help="a checkout of tzt101/INADE to compare with")
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--size", type=int, default=256, help="output size (crop_size), square")
    p.add_argument("--instances", type=int, default=10)
    p.add_argument("--min-run-time", type=float, default=3.0, help="seconds of timing per path and call")
    p.add_argument("--name", default="model_speed", help="results file name")
    args = p.parse_args(argv)

    device = common.default_device()
    cfg = inade.config("celeba", ngf=args.ngf, crop_size=args.size)
    label, inst = (t.to(device) for t in face_layout(args.size, args.instances, cfg.label_nc))
    L = int(inst.max()) + 1
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(1, L, 2, cfg.noise_nc, generator=g).to(device)
    z = torch.randn(1, cfg.z_dim, generator=g).to(device)
    notes = [f"CelebAMask-HQ config, ngf={args.ngf}, {args.size}x{args.size}, B=1, {L} instances; "
             f"ops: {inade.ops.resolve(device)} backend; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"]

    models, info = build_public(args.official_code, cfg) if args.official_code else (None, "no --official-code")
    G, E = inade.Generator(cfg), inade.NoiseEncoder(cfg)
    real = (torch.rand(1, 3, args.size, args.size, generator=g) * 2 - 1).to(device)
    public = None
    if models is not None:
        public, public_E = (m.to(device) for m in models)
        inade.load_official(G, public.state_dict())
        inade.load_official(E, public_E.state_dict())
        seg, onehot = official_style.public_generator_inputs(label, inst, cfg)
        base_path = "public code"
        base = generator_calls(public, lambda: public(seg, input_instances=onehot, noise=noise, noise_ins=z))
        base.update(encoder_call(public_E, public,
                                 lambda: public_remapped(public, public_E, seg, onehot, real, noise, z)))
        notes.append(check_compat_swap(args.official_code))
        notes.append(f"baseline: the public code at {args.official_code} (stubbed imports: {info or 'none'}), "
                     "same weights via inade.load_official, its one-hot inputs built untimed")
    else:
        base_path = "official-style"
        notes.append(f"baseline: official-style re-implementation (public code not run: {info})")
    G, E = G.to(device), E.to(device)
    ours = generator_calls(G, lambda: G(label, inst, noise=noise, z=z))
    ours.update(encoder_call(E, G, lambda: G(label, inst, noise=noise, z=z, remap=E(real, inst))))
    if public is None:
        base = {name: (setup, _official(fn)) for name, (setup, fn) in ours.items()}

    with torch.no_grad():
        G.eval()
        y32 = G(label, inst, noise=noise, z=z)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            y16 = G(label, inst, noise=noise, z=z).float()
        yb = base["G inference fp32"][1]().float()
        eg = ours["E+G inference fp32"][1]().float() - base["E+G inference fp32"][1]().float()
    notes.append(f"max |ours - {base_path}| of the float32 image: {(y32 - yb).abs().max():.2e} (G), "
                 f"{eg.abs().max():.2e} (E+G)")
    err = (y16 - y32).abs()
    notes.append(f"bfloat16 autocast image error vs float32: max {err.max():.2e}, mean {err.mean():.2e}, i.e. "
                 f"{err.max() / y32.abs().max():.2%} of the image's largest value {y32.abs().max():.3f} "
                 "(initialised weights, not a trained model)")
    print(f"device {common.device_name(device)}, ngf {args.ngf}, {args.size}x{args.size}, L={L}, "
          f"baseline {base_path}", flush=True)
    load_before = os.getloadavg()
    rows = measure(ours, base, base_path, device, args.min_run_time)
    notes.append(f"load average (1 min) before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f} on "
                 f"{os.cpu_count()} cores (shared machine; load_1min per row; paths timed alternately)")
    compare(rows, base_path)
    for r in rows:
        r.update(ngf=args.ngf, size=args.size, batch=1, instances=L, config="celeba")
    path = common.write_results(args.name, rows, device, notes="\n".join(notes))
    table = common.markdown_table(rows, ["call", "path", "median_ms", "peak_extra_MB", "vs", "speedup",
                                         "memory_ours_over_baseline", "load_1min"])
    text = f"# Model speed ({common.device_name(device)})\n\n{table}\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    ops = op_summary(device)
    if ops:
        text += ("\n## The ops, forward+backward (float32, from the op benchmarks' JSON)\n\n"
                 + common.markdown_table(ops, ["op", "shape", "fwd_bwd_ms", "x_vs_official", "vs_L1"]) + "\n")
    from inade.utils.files import write_text_atomic  # noqa: PLC0415

    write_text_atomic(path.with_suffix(".md"), text)
    print("\n" + text)
    print(f"wrote {path} and {path.with_suffix('.md').name}")


if __name__ == "__main__":
    main()
