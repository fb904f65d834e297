"""Whole-model speed: generator inference latency and one training step, ours against
the same network on the official-style paths.

Configuration: CelebAMask-HQ (``inade.config("celeba")``: 19 classes, 256×256
output, noise_nc 64, z_dim 256) with a reduced width (``--ngf``, default 16; the
paper's is 64), batch 1, a synthetic face-like layout of ``--instances`` instances.

Rows (each for ``ours`` = the default backend of the ops, and ``official-style``):

* ``G inference``: ``G(label, inst)`` in eval mode under ``torch.no_grad``.
* ``E+G inference``: encode a reference, then generate with the remapped noise.
* ``train step``: one iteration of the generator and the discriminator, both
  forward and backward: ``E`` on the real image, ``G`` with the remapped noise,
  ``D`` (2 scales, ndf 64) on fake and real, the losses (hinge GAN, feature
  matching, KL; no VGG — it needs downloaded weights and costs the same in both
  paths), backward; then ``D`` on the detached fake and the real image, its hinge
  losses, backward. No optimizer update; gradients are cleared (untimed) before each step.

``official-style`` swaps the three ops for bench/official_style.py's re-implementations
of the public code's approach — dense one-hot maps + ``einsum`` in every norm
(``modulation``), a Python loop over instances for the encoder's pooling
(``avg_pool_loop``), ``unfold`` + ``einsum`` for the instance-aware conv
(``conv2d_unfold``) — everywhere the package calls them (:func:`official_style_ops`);
the modules, weights and inputs are the same. Rows whose op has no official-style
version yet are left out (and said so in the notes).

    python -m bench.bench_model_speed                  # ngf 16, 256×256, B=1
    python -m bench.bench_model_speed --ngf 8 --size 128 --min-run-time 1
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
import warnings

import torch

import inade
from bench import common, official_style
from inade.models.losses import INADELoss

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


# ---------------------------------------------------------------------------
# Inputs and models
# ---------------------------------------------------------------------------


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


def build(ngf: int, size: int, device: torch.device, seed: int = 0):
    cfg = inade.config("celeba", ngf=ngf, crop_size=size)
    torch.manual_seed(seed)
    G, D = inade.Generator(cfg).to(device), inade.Discriminator(cfg).to(device)
    try:
        E = inade.NoiseEncoder(cfg).to(device)
    except Exception as err:  # noqa: BLE001 - the encoder's ops may not be there yet
        warnings.warn(f"no encoder ({type(err).__name__}: {err}); E rows left out")
        E = None
    return cfg, G, E, D


def try_call(fn) -> str | None:
    """``None`` when ``fn()`` runs, else the error as text."""
    try:
        fn()
        return None
    except Exception as err:  # noqa: BLE001
        return f"{type(err).__name__}: {err}"


# ---------------------------------------------------------------------------
# The measured calls
# ---------------------------------------------------------------------------


def make_calls(cfg, G, E, D, label, inst, real):
    crit = INADELoss(cfg, use_vgg=False)
    noise = torch.randn(1, int(inst.max()) + 1, 2, cfg.noise_nc, device=real.device)
    z = torch.randn(1, cfg.z_dim, device=real.device)

    def g_inference():
        G.eval()
        with torch.no_grad():
            return G(label, inst, noise=noise, z=z)

    def eg_inference():
        G.eval()
        E.eval()
        with torch.no_grad():
            return G(label, inst, noise=noise, z=z, remap=E(real, inst))

    def clear_grads():  # before each step, untimed: its frees would blur the memory trace
        for m in (G, E, D):
            if m is not None:
                m.zero_grad(set_to_none=True)

    def train_step():
        for m in (G, E, D):
            if m is not None:
                m.train()
        enc = E(real, inst) if E is not None else None
        fake = G(label, inst, noise=noise, z=z, remap=enc)
        g_losses = crit.generator_losses(D, label, inst, fake, real, enc)
        sum(g_losses.values()).backward()
        d_losses = crit.discriminator_losses(D, label, inst, fake, real)
        sum(d_losses.values()).backward()
        return fake

    calls = {"G inference": (None, g_inference), "train step": (clear_grads, train_step)}
    if E is not None:
        calls["E+G inference"] = (None, eg_inference)
    return calls


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


def measure(calls: dict, official: dict, device: torch.device, min_run_time: float) -> list[dict]:
    """Rows of median time and peak extra memory per call and path (``official`` holds the calls that
    run on the official-style path)."""
    rows = []
    for name, (setup, fn) in calls.items():
        paths = {"ours": fn}
        if name in official:
            paths["official-style"] = _official(fn)
        medians = interleaved_medians(paths, device, min_run_time, setup=setup)
        for path, call in paths.items():
            if setup:
                setup()
            peak = common.peak_extra_bytes(call, device)
            rows.append({"call": name, "path": path, "median_ms": medians[path], "peak_extra_MB": peak / 2**20})
            print(f"  {name:14s} {path:15s} {medians[path]:9.1f} ms  {peak / 2**20:8.1f} MB", flush=True)
    return rows


def output_gap(G, label, inst) -> float:
    """Max absolute difference between G's outputs on the two paths (same weights, noise, z)."""
    G.eval()
    noise = torch.randn(1, int(inst.max()) + 1, 2, G.cfg.noise_nc, device=label.device)
    z = torch.randn(1, G.cfg.z_dim, device=label.device)
    with torch.no_grad():
        ours = G(label, inst, noise=noise, z=z)
        with official_style_ops():
            off = G(label, inst, noise=noise, z=z)
    return float((ours - off).abs().max())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ngf", type=int, default=16)
    p.add_argument("--size", type=int, default=256, help="output size (crop_size), square")
    p.add_argument("--instances", type=int, default=10)
    p.add_argument("--min-run-time", type=float, default=3.0, help="seconds of timing per measurement")
    p.add_argument("--no-official", action="store_true", help="skip the official-style path")
    p.add_argument("--name", default="model_speed", help="results file name")
    args = p.parse_args(argv)

    device = common.default_device()
    cfg, G, E, D = build(args.ngf, args.size, device)
    label, inst = (t.to(device) for t in face_layout(args.size, args.instances, cfg.label_nc))
    real = (torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(1)) * 2 - 1).to(device)
    L = int(inst.max()) + 1
    notes = [
        f"CelebAMask-HQ config with ngf={args.ngf} (paper 64), {args.size}x{args.size}, B=1, {L} instances; "
        f"train step = {'E+G+D' if E is not None else 'G+D (no encoder available)'} forward/backward with GAN, "
        "feature-matching and KL losses, then D on the detached fake: forward/backward; no VGG loss, no "
        "optimizer update (gradients cleared untimed before each step). Median of alternating single-call samples.",
        f"ops: {inade.ops.resolve(device)} backend for 'ours'; official-style = bench/official_style.py functions "
        "swapped in for the three ops (same modules, weights, inputs).",
    ]
    calls = make_calls(cfg, G, E, D, label, inst, real)
    print(f"device {common.device_name(device)}, ngf {args.ngf}, {args.size}x{args.size}, L={L}")
    official = {}
    if not args.no_official:
        missing = sorted({"instance_modulation", "instance_avg_pool", "instance_conv2d"} - set(official_replacements()))
        if missing:
            notes.append(f"no official-style baseline for {missing} in bench/official_style.py: the "
                         "official-style rows run our op there")
        for name, (_, fn) in calls.items():
            err = try_call(_official(fn))
            if err is None:
                official[name] = fn
            else:
                notes.append(f"official-style '{name}' not measured ({err}); missing baselines: {missing}")
        notes.append(f"max |ours - official-style| of G's output: {output_gap(G, label, inst):.2e}")
    load_before = os.getloadavg()
    rows = measure(calls, official, device, args.min_run_time)
    notes.append(f"load average (1 min) before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f} "
                 f"on {os.cpu_count()} cores (the machine is shared; paths were timed alternately)")
    by = {(r["call"], r["path"]): r for r in rows}
    for r in rows:
        o = by.get((r["call"], "official-style"))
        if r["path"] == "ours" and o is not None:
            r["speedup_vs_official"] = o["median_ms"] / r["median_ms"]
            r["memory_ratio_official_over_ours"] = o["peak_extra_MB"] / max(r["peak_extra_MB"], 1e-9)

    for r in rows:
        r.update(ngf=args.ngf, size=args.size, batch=1, instances=L, config="celeba")
    path = common.write_results(args.name, rows, device, notes="\n".join(notes))
    table = common.markdown_table(rows, ["call", "path", "median_ms", "peak_extra_MB", "speedup_vs_official",
                                         "memory_ratio_official_over_ours"])
    text = f"# Model speed ({common.device_name(device)})\n\n{table}\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    path.with_suffix(".md").write_text(text)
    print("\n" + text)
    print(f"wrote {path} and {path.with_suffix('.md').name}")


if __name__ == "__main__":
    main()
