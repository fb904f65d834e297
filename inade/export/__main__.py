"""``python -m inade.export``: a checkpoint's generator (and encoder) as ONNX or an AOTInductor package.

    python -m inade.export --checkpoint C --format onnx --out inade.onnx [--encoder]
    python -m inade.export --checkpoint C --format pt2  --out inade.pt2  [--max-instances 64]

Writes ``--out`` (the generator graph) and, with ``--encoder``, the encoder graph beside it
as ``<name>.encoder<suffix>`` (``inade.encoder.onnx``): ``--encoder`` alone takes the
checkpoint's encoder, ``--encoder E.pth`` a public-code ``*_net_E.pth`` (as inade-synth).
Each file is written whole or not at all. A user error (a checkpoint without a generator,
``--max-instances`` out of range, a ``--size`` the generator cannot make, an ``--out``
that cannot be written or that exists without ``--overwrite``, a missing exporter package or C++ compiler) is one line
``error: …`` and exit code 2. See docs/EXPORT.md.
"""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping
from pathlib import Path

from inade.utils.arguments import ArgumentParser, at_least
from inade.utils.errors import UserError, run_command

FORMATS = ("onnx", "pt2")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m inade.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="our checkpoint (G, E, config) or a public *_net_G.pth")
    p.add_argument("--format", required=True, choices=FORMATS, help="onnx (onnxruntime) or pt2 (AOTInductor, CPU)")
    p.add_argument("--out", required=True, help="the generator's file (.onnx / .pt2)")
    p.add_argument("--size", nargs=2, type=at_least(1), metavar=("H", "W"),
                   help="image size; must be the generator's own (default: it)")
    p.add_argument("--max-instances", type=int, default=None, metavar="L",
                   help="largest number of instances (noise rows) the graph takes (default 256)")
    p.add_argument("--encoder", nargs="?", const=True, default=None, metavar="E.pth",
                   help="also export the encoder, beside --out as <name>.encoder<suffix>: the checkpoint's, "
                        "or a public-code *_net_E.pth")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out (and the encoder's file) when it exists (default: stop, keeping it)")
    p.add_argument("--config", help="dataset preset when the checkpoint has no config (cityscapes, celeba, ...)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config option")
    return p


def encoder_path(out: Path) -> Path:
    """Where ``--encoder`` writes the encoder graph: ``inade.onnx`` -> ``inade.encoder.onnx``."""
    return out.with_name(f"{out.stem}.encoder{out.suffix}")


def need_generator(obj, path) -> None:
    """Refuse a checkpoint that holds no generator: ours without ``G``, a public encoder, anything else."""
    if isinstance(obj, Mapping) and "G" in obj:
        if obj["G"] is None:
            raise UserError(f"--checkpoint {path}: holds no generator (its 'G' entry is empty)")
        return
    keys = [k for k in obj if isinstance(k, str)] if isinstance(obj, Mapping) else []
    bare = {k.split("module.", 1)[-1] for k in keys}
    if "fc.weight" in bare or any(k.startswith("head_0.") for k in bare) or "state_dict" in bare:
        return
    if any(k.startswith("layer1.") for k in bare):
        raise UserError(f"--checkpoint {path}: is an encoder, not a generator (pass it as --encoder with the "
                        "generator as --checkpoint)")
    what = f"entries {', '.join(sorted(keys)[:6])}" if keys else f"a {type(obj).__name__}"
    raise UserError(f"--checkpoint {path}: holds no generator ({what}; expected our checkpoint with 'G' or a "
                    "public *_net_G.pth)")


def check_size(size, cfg) -> None:
    """``--size`` must be the generator's own: its first layer's grid is fixed by its weights."""
    H, W = cfg.output_size
    if size is not None and tuple(size) != (H, W):
        raise UserError(f"--size {size[0]} {size[1]}: this generator makes {H}x{W} images only (crop_size="
                        f"{cfg.crop_size}, aspect_ratio={cfg.aspect_ratio}; its first layer's grid is fixed by its "
                        f"weights): pass --size {H} {W} or leave it out")


def _check_tools(fmt: str) -> None:
    """The exporter's packages (onnx) or a C++ compiler (pt2), before minutes of work."""
    if fmt == "onnx":
        missing = [m for m in ("onnx", "onnxscript") if not _importable(m)]
        if missing:
            raise UserError(f"--format onnx needs {' and '.join(missing)}: pip install -e '.[export]'")
        return
    import shutil  # noqa: PLC0415

    from torch._inductor import cpp_builder  # noqa: PLC0415

    try:
        compiler = cpp_builder.get_cpp_compiler()
    except Exception as err:  # noqa: BLE001 - whatever inductor says, it found no compiler
        raise UserError(f"--format pt2 needs a C++ compiler (g++ or clang++; CXX names one): {err}") from None
    if shutil.which(compiler) is None and not Path(compiler).is_file():
        raise UserError(f"--format pt2 needs a C++ compiler: {compiler} is not installed (set CXX to one)")


def _importable(name: str) -> bool:
    import importlib.util  # noqa: PLC0415

    return importlib.util.find_spec(name) is not None


def writable_folder(out: Path) -> None:
    """Make ``--out``'s folder and write a probe file there now, not after minutes of export."""
    import tempfile  # noqa: PLC0415

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out.parent, prefix=".inade-export-"):
            pass
    except OSError as err:
        raise UserError(f"--out {out}: cannot write in folder {out.parent} ({err.strerror or err})") from None


def refuse_to_replace(outs: list[Path], overwrite: bool) -> None:
    """An existing output file (the user's, or an earlier export) is replaced only with
    ``--overwrite``; the encoder's file is derived from ``--out``, so the user may not know its name."""
    existing = [p for p in outs if p.exists() or p.is_symlink()]
    if existing and not overwrite:
        raise UserError(f"{existing[0]}: already exists (kept as it is): pass --overwrite to replace it, "
                        "or another --out")


def load(args):
    """``(G, E or None, cfg)`` of ``--checkpoint`` (and ``--encoder``), checked."""
    from inade.cli import _parse_overrides, load_models, need_file  # noqa: PLC0415
    from inade.training.checkpoint import load_checkpoint  # noqa: PLC0415

    saved = load_checkpoint(need_file(args.checkpoint, "--checkpoint"))
    need_generator(saved, args.checkpoint)
    public_encoder = args.encoder if isinstance(args.encoder, str) else None
    G, E, cfg = load_models(args.checkpoint, args.config, _parse_overrides(args.set), public_encoder, "cpu",
                            saved=saved)
    if args.encoder is True and E is None:
        raise UserError(f"--encoder: {args.checkpoint} holds no encoder (pass a public *_net_E.pth as --encoder E.pth)")
    return G, (E if args.encoder else None), cfg


def run(args) -> list[Path]:
    import inade.export as X  # noqa: PLC0415
    from inade.utils.files import atomic_path, check_output_path, output_errors  # noqa: PLC0415

    out = check_output_path(args.out, "--out")
    outs = [out] + ([check_output_path(encoder_path(out), "--encoder's output")] if args.encoder else [])
    refuse_to_replace(outs, args.overwrite)
    writable_folder(out)
    max_instances = X.DEFAULT_MAX_INSTANCES if args.max_instances is None else args.max_instances
    X.check_max_instances(max_instances)
    _check_tools(args.format)
    G, E, cfg = load(args)
    check_size(args.size, cfg)
    jobs = [(X.generator_program(G, max_instances), X.metadata(cfg, max_instances, "generator"), "image")]
    if E is not None:
        meta = X.metadata(cfg, max_instances, "encoder")
        jobs.append((X.encoder_program(E, max_instances), meta, "remapped_noise"))
    # Every file to a temporary name first; all are renamed into place only when all are written.
    with contextlib.ExitStack() as stack:
        for path, (program, meta, output) in zip(outs, jobs):
            tmp = stack.enter_context(atomic_path(path))
            with output_errors(path, "the exported model"):
                if args.format == "onnx":
                    X.save_onnx(program, tmp, meta, output)
                else:
                    X.save_pt2(program, tmp, meta)
    return outs


def main(argv=None) -> int:
    def _main():
        for path in run(build_parser().parse_args(argv)):
            print(path)
    return run_command(_main)


if __name__ == "__main__":
    sys.exit(main())
