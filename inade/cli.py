"""``inade-synth`` (also ``python -m inade.cli``): instance-level diverse synthesis from the command line.

Subcommands (each writes one RGB PNG and, with ``--save-latents``, the latents
that made it)::

    inade-synth random         --checkpoint C --label L.png [--inst I.png] --out O.png [--seed S]
    inade-synth resample       ... --instances 3,7 --seed S      [--latents F.pt | --base-seed S0]
    inade-synth resample-class ... --class 5 --seed S           [--latents F.pt | --base-seed S0]
    inade-synth copy-style     ... --reference R.png --reference-inst RI.png --pairs 2:3,4:1
                                                                [--latents F.pt | --base-seed S0]

The instance map's pixel values are its ids; the tool makes them compact
(``0 … L-1``), and ``--instances`` / ``--pairs`` name ids as they appear in the
PNG files. Without ``--inst`` the label map is the instance map. ``resample`` and
friends start from the latents of ``random --seed S0`` (``--base-seed``, default 0)
or from a file written by ``--save-latents``.

Checkpoints: ours (a dict with the state dicts under ``G`` and ``E`` and the
options under ``config``), or the public code's ``*_net_G.pth`` (then give
``--config`` with the dataset preset, and ``--encoder`` for its ``*_net_E.pth``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from inade.utils.png import PNGError, read_png, write_atomic, write_png


class CLIError(Exception):
    """An error the user can act on; printed without a traceback."""


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------


def _torch_load(path: Path):
    if not path.is_file():
        raise CLIError(f"{path}: no such file")
    from inade.config import Config  # noqa: PLC0415

    try:
        torch.serialization.add_safe_globals([Config])
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file: one clear message
        raise CLIError(f"{path}: cannot read it as a PyTorch checkpoint ({type(err).__name__}: {err})") from err


def _parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise CLIError(f"--set expects key=value, got {item!r}")
        for conv in (int, float):
            try:
                out[key] = conv(value)
                break
            except ValueError:
                continue
        else:
            out[key] = {"true": True, "false": False}.get(value.lower(), value)
    return out


def build_config(saved, name: str | None, overrides: dict):
    """The model options: those saved in the checkpoint, else the preset ``name``; then ``overrides``."""
    import inade  # noqa: PLC0415

    if saved is not None:
        cfg = saved if isinstance(saved, inade.Config) else inade.Config(**dict(saved))
        return cfg.replace(**overrides) if overrides else cfg
    if name is None:
        raise CLIError("the checkpoint holds no configuration: pass --config (cityscapes, ade20k, celeba, deepfashion, ...)")
    return inade.config(name, **overrides)


def load_models(checkpoint: str | Path, config_name: str | None = None, overrides: dict | None = None,
                encoder: str | Path | None = None, device: str = "cpu"):
    """``(G, E or None, cfg)`` from one of our checkpoints or a public-code one."""
    import inade  # noqa: PLC0415

    path = Path(checkpoint)
    obj = _torch_load(path)
    ours = isinstance(obj, dict) and "G" in obj
    try:
        if ours:
            cfg = build_config(obj.get("config"), config_name, overrides or {})
            G = inade.Generator(cfg)
            G.load_state_dict(obj["G"])
            E = None
            if obj.get("E") is not None:
                E = inade.NoiseEncoder(cfg)
                E.load_state_dict(obj["E"])
        else:
            cfg = build_config(None, config_name, overrides or {})
            G = inade.load_official(inade.Generator(cfg), obj)
            E = None
        if encoder is not None:
            E = inade.load_official(inade.NoiseEncoder(cfg), _torch_load(Path(encoder)))
    except (RuntimeError, ValueError, TypeError, KeyError) as err:
        raise CLIError(f"{path}: does not fit the model ({err})") from err
    return G.to(device), (E.to(device) if E is not None else None), cfg


# ---------------------------------------------------------------------------
# Maps and images
# ---------------------------------------------------------------------------


def _read(path: str | Path, **kw) -> np.ndarray:
    try:
        return read_png(path, **kw)
    except FileNotFoundError as err:
        raise CLIError(str(err)) from err
    except PNGError as err:
        raise CLIError(str(err)) from err


def read_label(path: str | Path, cfg) -> np.ndarray:
    """Class ids ``[H, W]`` int64 from a greyscale or palette PNG (255 -> don't-care class when the config has one)."""
    a = _read(path)
    if a.ndim != 2:
        raise CLIError(f"{path}: a label map must be greyscale or palette (one class id per pixel), got {a.shape[2]} channels")
    label = a.astype(np.int64)
    if getattr(cfg, "contain_dontcare_label", False):
        label[label == 255] = cfg.label_nc
    limit = cfg.label_nc + (1 if getattr(cfg, "contain_dontcare_label", False) else 0)
    if label.max() >= limit:
        raise CLIError(f"{path}: class id {int(label.max())} but the model has {limit} classes (ids 0 … {limit - 1})")
    return label


def read_instances(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(compact ids [H, W] int64, raw ids [L])`` from an instance PNG (grey, or RGB read as one 24-bit id)."""
    a = _read(path).astype(np.int64)
    if a.ndim == 3:
        if a.shape[2] not in (3, 4):
            raise CLIError(f"{path}: an instance map must be greyscale or RGB, got {a.shape[2]} channels")
        a = (a[..., 0] << 16) | (a[..., 1] << 8) | a[..., 2]
    raw, compact = np.unique(a, return_inverse=True)
    return compact.reshape(a.shape), raw


def read_image(path: str | Path) -> np.ndarray:
    """``[3, H, W]`` float32 in ``[-1, 1]`` from an 8- or 16-bit PNG (grey replicated, alpha dropped)."""
    a = _read(path, expand_palette=True)
    scale = 65535.0 if a.dtype == np.uint16 else 255.0
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    elif a.shape[2] == 2:
        a = np.repeat(a[..., :1], 3, axis=2)
    a = a[..., :3].astype(np.float32) / scale
    return np.ascontiguousarray(a.transpose(2, 0, 1)) * 2 - 1


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` in ``[-1, 1]`` -> ``[H, W, 3]`` uint8."""
    x = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round()
    return x.to(torch.uint8).permute(1, 2, 0).numpy()


def compact_ids(raw_ids: list[int], raw: np.ndarray, what: str, path) -> list[int]:
    """Ids as written in an instance PNG -> compact ids."""
    lookup = {int(r): i for i, r in enumerate(raw)}
    missing = [i for i in raw_ids if i not in lookup]
    if missing:
        raise CLIError(f"{path}: {what} {missing} not in the instance map (ids present: {[int(r) for r in raw]})")
    return [lookup[i] for i in raw_ids]


# ---------------------------------------------------------------------------
# Latents
# ---------------------------------------------------------------------------


def save_latents(path: str | Path, sample, raw_ids: np.ndarray) -> None:
    import io  # noqa: PLC0415

    buf = io.BytesIO()
    torch.save({"noise": sample.noise.cpu(), "z": sample.z.cpu(), "instance_ids": torch.as_tensor(raw_ids)}, buf)
    write_atomic(path, buf.getvalue())


def load_latents(path: str | Path, raw_ids: np.ndarray):
    obj = _torch_load(Path(path))
    if not isinstance(obj, dict) or not {"noise", "z"} <= set(obj):
        raise CLIError(f"{path}: not a latents file (expected the keys noise and z, from --save-latents)")
    saved_ids = obj.get("instance_ids")
    if saved_ids is not None and saved_ids.tolist() != [int(r) for r in raw_ids]:
        raise CLIError(
            f"{path}: latents were made for instance ids {saved_ids.tolist()}, "
            f"but the instance map has {[int(r) for r in raw_ids]}"
        )
    return obj["noise"], obj["z"]


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------


def _parse_ids(text: str, flag: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError as err:
        raise CLIError(f"{flag} expects comma-separated integers, got {text!r}") from err


def _parse_pairs(text: str) -> list[tuple[int, int]]:
    pairs = []
    for item in text.split(","):
        j, sep, i = item.partition(":")
        try:
            pairs.append((int(j), int(i)))
        except ValueError as err:
            raise CLIError(f"--pairs expects ref_id:target_id[,ref_id:target_id ...], got {text!r}") from err
        if not sep:
            raise CLIError(f"--pairs expects ref_id:target_id[,ref_id:target_id ...], got {text!r}")
    return pairs


def run(args) -> Path:
    from inade.synthesis import Sample, Synthesizer  # noqa: PLC0415

    G, E, cfg = load_models(args.checkpoint, args.config, _parse_overrides(args.set), args.encoder, args.device)
    synth = Synthesizer(G, E, cfg)
    label = torch.from_numpy(read_label(args.label, cfg))[None].to(args.device)
    inst_np, raw = read_instances(args.inst if args.inst else args.label)
    inst = torch.from_numpy(inst_np)[None].to(args.device)
    if inst.shape != label.shape:
        raise CLIError(f"{args.inst}: instance map is {tuple(inst.shape[1:])} but the label map is {tuple(label.shape[1:])}")
    inst_path = args.inst or args.label
    try:
        if args.command == "random":
            sample = synth.random(label, inst, args.seed)
        else:
            if args.latents:
                noise, z = load_latents(args.latents, raw)
                base = Sample(image=None, noise=noise.to(synth._like), z=z.to(synth._like))
            else:
                base = synth.random(label, inst, args.base_seed)
            if args.command == "resample":
                ids = compact_ids(_parse_ids(args.instances, "--instances"), raw, "--instances", inst_path)
                sample = synth.resample_instances(label, inst, base, ids, args.seed)
            elif args.command == "resample-class":
                sample = synth.resample_class(label, inst, base, args.class_id, args.seed)
            else:
                sample = _copy_style(synth, args, label, inst, raw, inst_path, base)
    except ValueError as err:
        raise CLIError(str(err)) from err
    try:
        out = write_png(args.out, to_uint8(sample.image[0]))
        if args.save_latents:
            save_latents(args.save_latents, sample, raw)
    except OSError as err:
        raise CLIError(f"cannot write the output: {err}") from err
    return out


def _copy_style(synth, args, label, inst, raw, inst_path, base):
    if synth.E is None:
        raise CLIError(f"{args.checkpoint}: has no encoder (E), which copy-style needs; pass --encoder")
    ref = torch.from_numpy(read_image(args.reference))[None].to(args.device)
    ref_inst_np, ref_raw = read_instances(args.reference_inst)
    ref_inst = torch.from_numpy(ref_inst_np)[None].to(args.device)
    if ref_inst.shape[1:] != ref.shape[2:]:
        raise CLIError(
            f"{args.reference_inst}: reference instance map is {tuple(ref_inst.shape[1:])} "
            f"but the reference image is {tuple(ref.shape[2:])}"
        )
    pairs = _parse_pairs(args.pairs)
    refs = compact_ids([j for j, _ in pairs], ref_raw, "--pairs reference ids", args.reference_inst)
    targets = compact_ids([i for _, i in pairs], raw, "--pairs target ids", inst_path)
    return synth.copy_style(label, inst, base, ref, ref_inst, list(zip(refs, targets)), sample=args.sample,
                            seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inade-synth", description="Instance-level diverse image synthesis with INADE.")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--checkpoint", required=True, help="our checkpoint (G, E, config) or a public *_net_G.pth")
    common.add_argument("--config", help="dataset preset when the checkpoint has no config (cityscapes, ade20k, celeba, ...)")
    common.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config option")
    common.add_argument("--encoder", help="public-code encoder checkpoint (*_net_E.pth)")
    common.add_argument("--label", required=True, help="label map PNG (class id per pixel)")
    common.add_argument("--inst", help="instance map PNG (id per pixel); default: the label map")
    common.add_argument("--out", required=True, help="output RGB PNG")
    common.add_argument("--seed", type=int, default=0, help="seed of the new draws")
    common.add_argument("--save-latents", help="also write the noise and z used (.pt) for later commands")
    common.add_argument("--device", default="cpu")
    base = argparse.ArgumentParser(add_help=False)
    group = base.add_mutually_exclusive_group()
    group.add_argument("--latents", help="start from latents written by --save-latents")
    group.add_argument("--base-seed", type=int, default=0, help="start from `random --seed BASE_SEED` (default 0)")

    sub.add_parser("random", parents=[common], help="a new image, all instances drawn from --seed")
    p = sub.add_parser("resample", parents=[common, base], help="redraw the style of some instances")
    p.add_argument("--instances", required=True, help="comma-separated instance ids (as in the instance PNG)")
    p = sub.add_parser("resample-class", parents=[common, base], help="redraw every instance of one class")
    p.add_argument("--class", dest="class_id", type=int, required=True, help="class id")
    p = sub.add_parser("copy-style", parents=[common, base], help="copy instance styles from a reference image")
    p.add_argument("--reference", required=True, help="reference RGB PNG")
    p.add_argument("--reference-inst", required=True, help="reference instance map PNG")
    p.add_argument("--pairs", required=True, help="ref_id:target_id[,...] (ids as in the PNGs)")
    p.add_argument("--sample", action="store_true", help="draw around the reference style instead of its mean")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = run(args)
    except CLIError as err:
        print(f"inade-synth: error: {err}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
