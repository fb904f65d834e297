"""``inade-synth`` (also ``python -m inade.cli``): instance-level diverse synthesis from the command line.

Subcommands (each writes one RGB image, PNG or JPEG by the extension of ``--out``,
and, with ``--save-latents``, the latents that made it)::

    inade-synth random         --checkpoint C --label L.png [--inst I.png] --out O.png [--seed S]
    inade-synth render         ... --latents F.pt                (the picture of those latents, as it was)
    inade-synth resample       ... --instances 3,7 --seed S      [--latents F.pt | --base-seed S0]
    inade-synth resample-class ... --class 5 --seed S           [--latents F.pt | --base-seed S0]
    inade-synth copy-style     ... --reference R.png --reference-inst RI.png --pairs 2:3,4:1
                                                                [--latents F.pt | --base-seed S0]

Maps are read by :mod:`inade.data.images` (one rule for greyscale, 16-bit,
palette and RGB files) and the reference image by Pillow (PNG, JPEG, ...). The
instance map's pixel values are its ids; the tool makes them compact
(``0 … L-1``, one per raw id) with the data loaders' rule: a raw id that spans several
classes (COCO-Stuff's 0 for all stuff) is one instance — one noise row, each pixel its
class's parameters — as in training and in the public code. ``--instances`` / ``--pairs``
name ids as they appear in the files. Without ``--inst`` the label map is the instance map.
``resample`` and friends start from the latents of ``random --seed S0``
(``--base-seed``, default 0) or from a file written by ``--save-latents``.

A user error (a missing or unreadable file, a class id outside ``label_nc``, a
checkpoint that does not fit) prints one line ``error: …`` on stderr and exits with 2.

Checkpoints: ours (a dict with the state dicts under ``G`` and ``E`` and the
options under ``config``), or the public code's ``*_net_G.pth`` (then give
``--config`` with the dataset preset, and ``--encoder`` for its ``*_net_E.pth``).
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from typing import TYPE_CHECKING

from inade.utils.cpu import thread_defaults
from inade.utils.errors import UserError, run_command
from inade.utils.arguments import ArgumentParser, check_device
from inade.utils.files import atomic_path, check_output_path, output_errors

if TYPE_CHECKING:  # torch loads after the options are parsed: each function imports what it runs
    import numpy as np


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------


def _parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set expects key=value, got {item!r}")
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
        raise UserError("the checkpoint holds no configuration: pass --config (cityscapes, ade20k, celeba, deepfashion, ...)")
    return inade.config(name, **overrides)


def load_models(checkpoint: str | Path, config_name: str | None = None, overrides: dict | None = None,
                encoder: str | Path | None = None, device: str = "cpu", saved=None):
    """``(G, E or None, cfg)`` from one of our checkpoints or a public-code one.

    ``saved``: ``checkpoint`` as :func:`load_checkpoint` already returned it (not read again).
    """
    from inade.training.checkpoint import load_checkpoint  # noqa: PLC0415

    import inade  # noqa: PLC0415

    path = need_file(checkpoint, "--checkpoint")
    if encoder is not None:
        need_file(encoder, "--encoder")
    if config_name is not None:
        try:
            inade.config(config_name)
        except ValueError as err:
            raise UserError(f"--config: {err}") from None
    obj = load_checkpoint(path) if saved is None else saved
    ours = isinstance(obj, dict) and "G" in obj
    try:
        cfg = build_config(obj.get("config") if ours else None, config_name, overrides or {})
    except (ValueError, TypeError) as err:
        raise UserError(f"{path}: invalid model options (saved config, --config, --set): {err}") from None
    try:
        if ours:
            G = inade.Generator(cfg)
            G.load_state_dict(obj["G"])
            E = None
            if obj.get("E") is not None:
                E = inade.NoiseEncoder(cfg)
                E.load_state_dict(obj["E"])
        else:
            G = inade.load_official(inade.Generator(cfg), obj)
            E = None
    except (RuntimeError, ValueError, TypeError, KeyError) as err:
        raise UserError(f"{path}: does not fit the model ({err})") from err
    if encoder is not None:  # its own file: a mismatch is named as its fault, not the generator's
        try:
            E = inade.load_official(inade.NoiseEncoder(cfg), encoder)  # reads and checks the file
        except (RuntimeError, ValueError, TypeError, KeyError) as err:
            raise UserError(f"--encoder {encoder}: does not fit the encoder of {path}'s model ({err})") from err
    return G.to(device), (E.to(device) if E is not None else None), cfg


# ---------------------------------------------------------------------------
# Maps and latents
# ---------------------------------------------------------------------------


def read_instances(path: str | Path, label: np.ndarray | None, *, size: tuple[int, int] | None = None,
                   size_of: str = "") -> tuple[np.ndarray, np.ndarray]:
    """``(compact ids [H, W] int64, raw id of each compact id [L])`` of an instance map file.

    The file is read by :func:`inade.data.read_index_map` and made compact with
    :func:`inade.data.compact_ids`, the data loaders' rule: one compact id per raw id,
    also for a raw id that spans several classes of ``label`` (one instance, as in the
    public code). The map must have ``label``'s size, else ``size`` (checked before decoding).
    """
    from inade.data.ids import compact_ids  # noqa: PLC0415
    from inade.data.images import read_index_map  # noqa: PLC0415

    if label is not None:
        size, size_of = label.shape, "the label map"
    raw = read_index_map(path, size=size, size_of=size_of)
    return compact_ids(raw)


def ids_of_raw(raw_ids: list[int], raw_of: np.ndarray, what: str, path) -> list[int]:
    """Ids as written in an instance file -> their compact ids."""
    import numpy as np  # noqa: PLC0415 - after parsing (inade-synth --help needs no torch)

    missing = [i for i in raw_ids if i not in set(raw_of.tolist())]
    if missing:
        raise UserError(f"{path}: {what} {missing} not in the instance map (ids present: {sorted(set(raw_of.tolist()))})")
    return [int(np.flatnonzero(raw_of == i)[0]) for i in raw_ids]


def _save_latents_to(file, sample, raw_of: np.ndarray) -> None:
    """Write the sample's ``noise`` and ``z`` and the raw id of each noise row to ``file``
    (a temporary file: :func:`write_outputs` renames it)."""
    import torch  # noqa: PLC0415 - after parsing (inade-synth --help needs no torch)

    state = {"noise": sample.noise.cpu(), "z": sample.z.cpu(), "instance_ids": torch.as_tensor(raw_of)}
    with open(file, "wb") as f:
        torch.save(state, f)


def write_outputs(out: Path, rgb: np.ndarray, latents: Path | None, sample, raw_of: np.ndarray) -> None:
    """The image and (``--save-latents``) its latents, both or neither: each goes to a temporary
    file, and the two are renamed into place only when both are written."""
    from inade.data.images import save_image  # noqa: PLC0415

    with contextlib.ExitStack() as stack:
        stack.enter_context(output_errors(out, "--out"))
        image_tmp = stack.enter_context(atomic_path(out))
        if latents is not None:
            stack.enter_context(output_errors(latents, "--save-latents"))
            _save_latents_to(stack.enter_context(atomic_path(latents)), sample, raw_of)
        save_image(image_tmp, rgb, out)


def need_file(path: str | Path, option: str) -> Path:
    """``path`` as a :class:`Path`; a folder given for a file is a :class:`UserError` naming ``option``."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path}: is a folder, not a file")
    return path


def load_latents(path: str | Path, raw_of: np.ndarray):
    """``(noise, z)`` from a ``--save-latents`` file made for the same instance map."""
    import torch  # noqa: PLC0415 - after parsing (inade-synth --help needs no torch)
    from inade.training.checkpoint import load_checkpoint  # noqa: PLC0415

    obj = load_checkpoint(need_file(path, "--latents"))
    if not isinstance(obj, dict) or not {"noise", "z"} <= set(obj):
        raise UserError(f"{path}: not a latents file (expected the keys noise and z, from --save-latents)")
    for key in ("noise", "z"):
        value = obj[key]
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise UserError(f"{path}: {key} is not a float tensor (a latents file from --save-latents holds two)")
        if not torch.isfinite(value).all():
            raise UserError(f"{path}: {key} holds NaN or infinite values; make the latents again with --save-latents")
    saved_ids = obj.get("instance_ids")
    if saved_ids is not None and saved_ids.tolist() != raw_of.tolist():
        raise UserError(
            f"{path}: latents were made for instance ids {saved_ids.tolist()}, "
            f"but the instance map has {raw_of.tolist()}"
        )
    return obj["noise"], obj["z"]


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------


def _parse_ids(text: str, flag: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError as err:
        raise UserError(f"{flag} expects comma-separated integers, got {text!r}") from err


def _parse_pairs(text: str) -> list[tuple[int, int]]:
    pairs = []
    for item in text.split(","):
        j, sep, i = item.partition(":")
        try:
            pairs.append((int(j), int(i)))
        except ValueError as err:
            raise UserError(f"--pairs expects ref_id:target_id[,ref_id:target_id ...], got {text!r}") from err
        if not sep:
            raise UserError(f"--pairs expects ref_id:target_id[,ref_id:target_id ...], got {text!r}")
    return pairs


def run(args) -> Path:
    """Run one ``inade-synth`` command; returns the written image's path (user errors: :class:`UserError`)."""
    import torch  # noqa: PLC0415 - after parsing (inade-synth --help needs no torch)
    from inade.data.images import read_index_map, read_label_map, to_uint8  # noqa: PLC0415

    from inade.synthesis import Sample, Synthesizer  # noqa: PLC0415

    out, latents_out = check_outputs(args)
    device = check_device(args.device)
    G, E, cfg = load_models(args.checkpoint, args.config, _parse_overrides(args.set), args.encoder, device)
    synth = Synthesizer(G, E, cfg)
    # Every map must have the model's output size, checked from its header before it is decoded.
    model_size = {"size": tuple(cfg.output_size),
                  "size_of": f"the model's output (crop_size={cfg.crop_size}, aspect_ratio={cfg.aspect_ratio:g})"}
    label_np = read_label_map(args.label, label_nc=cfg.label_nc,
                              contain_dontcare_label=getattr(cfg, "contain_dontcare_label", False), **model_size)
    inst_path = args.inst or args.label
    inst_np, raw_of = read_instances(inst_path, label_np)
    label = torch.from_numpy(label_np)[None].to(device)
    inst = torch.from_numpy(inst_np)[None].to(device)
    if getattr(cfg, "add_sketch", False) and not args.sketch:
        raise UserError(f"{args.checkpoint}: the model was trained with --add_sketch: pass --sketch EDGE_MAP.png")
    if args.sketch:
        sketch_np = read_index_map(args.sketch, **model_size)
        synth.sketch = (torch.from_numpy(sketch_np).float() / 255)[None, None].to(device)
    # The command's own inputs are read and checked before the generator runs.
    latents = load_latents(args.latents, raw_of) if getattr(args, "latents", None) else None
    if args.command == "resample":
        ids = ids_of_raw(_parse_ids(args.instances, "--instances"), raw_of, "--instances", inst_path)
    elif args.command == "resample-class" and not 0 <= args.class_id <= cfg.label_nc:
        raise UserError(f"--class {args.class_id}: this model's classes are 0 ... {cfg.label_nc - 1}"
                        f" ({cfg.label_nc} for don't-care)")
    elif args.command == "copy-style":
        ref, ref_inst, pairs = _read_reference(synth, args, raw_of, inst_path)
    try:
        if args.command == "random":
            sample = synth.random(label, inst, args.seed)
        else:
            if latents is not None:
                base = Sample(image=None, noise=latents[0].to(synth._like), z=latents[1].to(synth._like))
            else:
                base = synth.random(label, inst, args.base_seed)
            if args.command == "render":
                sample = synth.generate(label, inst, base.noise, base.z)
            elif args.command == "resample":
                sample = synth.resample_instances(label, inst, base, ids, args.seed)
            elif args.command == "resample-class":
                sample = synth.resample_class(label, inst, base, args.class_id, args.seed)
            else:
                sample = synth.copy_style(label, inst, base, ref, ref_inst, pairs, sample=args.sample, seed=args.seed)
    except ValueError as err:
        raise UserError(str(err)) from err
    write_outputs(out, to_uint8(sample.image[0]), latents_out, sample, raw_of)
    return out


def check_outputs(args) -> tuple[Path, Path | None]:
    """``--out`` and ``--save-latents``, refused before any work when they cannot be written."""
    from inade.data.images import image_format  # noqa: PLC0415

    out = check_output_path(args.out, "--out")
    image_format(out)
    latents = check_output_path(args.save_latents, "--save-latents") if args.save_latents else None
    if latents is not None and latents.resolve() == out.resolve():
        raise UserError(f"--save-latents {latents} is the --out image; give another file name")
    return out, latents


def _read_reference(synth, args, raw_of, inst_path):
    """copy-style's reference image, its instance map and the ``--pairs`` as compact ids, read and
    checked before any synthesis."""
    import torch  # noqa: PLC0415 - after parsing (inade-synth --help needs no torch)
    from inade.data.images import image_to_tensor, read_image  # noqa: PLC0415

    if synth.E is None:
        raise UserError(f"{args.checkpoint}: has no encoder (E), which copy-style needs; pass --encoder")
    ref_np = read_image(args.reference)
    if ref_np.shape[0] % 16 or ref_np.shape[1] % 16 or min(ref_np.shape[:2]) < 32:
        raise UserError(f"--reference {args.reference}: the image is {ref_np.shape[0]}x{ref_np.shape[1]} (HxW); the "
                        "encoder needs both sides multiples of 16, at least 32")
    ref_inst_np, ref_raw_of = read_instances(args.reference_inst, None, size=ref_np.shape[:2],
                                             size_of=f"the reference image {args.reference}")
    ref = image_to_tensor(ref_np)[None].to(synth._like.device)
    ref_inst = torch.from_numpy(ref_inst_np)[None].to(synth._like.device)
    pairs = []
    for j, i in _parse_pairs(args.pairs):
        (ref_id,) = ids_of_raw([j], ref_raw_of, "--pairs reference ids", args.reference_inst)
        (target,) = ids_of_raw([i], raw_of, "--pairs target ids", inst_path)
        pairs.append((ref_id, target))
    return ref, ref_inst, pairs


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="inade-synth", description="Instance-level diverse image synthesis with INADE.")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--checkpoint", required=True, help="our checkpoint (G, E, config) or a public *_net_G.pth")
    common.add_argument("--config", help="dataset preset when the checkpoint has no config (cityscapes, ade20k, celeba, ...)")
    common.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config option")
    common.add_argument("--encoder", help="public-code encoder checkpoint (*_net_E.pth)")
    common.add_argument("--label", required=True, help="label map (PNG: class id per pixel)")
    common.add_argument("--inst", help="instance map (PNG: id per pixel); default: the label map")
    common.add_argument("--sketch", help="edge map (greyscale PNG, 0 ... 255) for a model trained with --add_sketch")
    common.add_argument("--out", required=True, help="output image (.png, or .jpg)")
    common.add_argument("--seed", type=int, default=0, help="seed of the new draws")
    common.add_argument("--save-latents", help="also write the noise and z used (.pt) for later commands")
    common.add_argument("--device", default="cpu")
    base = argparse.ArgumentParser(add_help=False)
    group = base.add_mutually_exclusive_group()
    group.add_argument("--latents", help="start from latents written by --save-latents")
    group.add_argument("--base-seed", type=int, default=0, help="start from `random --seed BASE_SEED` (default 0)")

    sub.add_parser("random", parents=[common], help="a new image, all instances drawn from --seed")
    sub.add_parser("render", parents=[common, base], help="the image of --latents exactly (e.g. an INADE Studio export)")
    p = sub.add_parser("resample", parents=[common, base], help="redraw the style of some instances")
    p.add_argument("--instances", required=True, help="comma-separated instance ids (as in the instance PNG)")
    p = sub.add_parser("resample-class", parents=[common, base], help="redraw every instance of one class")
    p.add_argument("--class", dest="class_id", type=int, required=True, help="class id")
    p = sub.add_parser("copy-style", parents=[common, base], help="copy instance styles from a reference image")
    p.add_argument("--reference", required=True, help="reference image (PNG, JPEG, ...)")
    p.add_argument("--reference-inst", required=True, help="reference instance map PNG")
    p.add_argument("--pairs", required=True, help="ref_id:target_id[,...] (ids as in the PNGs)")
    p.add_argument("--sample", action="store_true", help="draw around the reference style instead of its mean")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``inade-synth``: 0 on success (the output's path on stdout); a user error prints one
    line ``error: …`` on stderr and returns 2."""
    thread_defaults()  # OMP_WAIT_POLICY=PASSIVE unless set: before torch loads OpenMP (inade.utils.cpu)

    def _main() -> int:
        print(run(build_parser().parse_args(argv)))
        return 0

    return run_command(_main)  # a user error, Ctrl-C or SIGTERM: one line (exit 2, 130, 143)


if __name__ == "__main__":
    sys.exit(main())
