"""``python -m inade.studio``: start INADE Studio on a local address and print it.

    python -m inade.studio [--checkpoint C] [--encoder E] [--config NAME] [--set KEY=VALUE]
                           [--host 127.0.0.1] [--port 8000] [--device cpu]

Without ``--checkpoint`` it opens ``checkpoints/inade_synthetic/latest.pt``, what
``make train`` writes. A public ``*_net_G.pth`` needs ``--config`` (its dataset
preset) and, for reference styles, ``--encoder`` (its ``*_net_E.pth``). ``--port 0``
takes a free port. It binds to 127.0.0.1 unless ``--host`` says otherwise.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_CHECKPOINT = Path("checkpoints/inade_synthetic/latest.pt")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m inade.studio", description="INADE Studio: paint, click, re-draw.")
    p.add_argument("--checkpoint", help=f"our checkpoint or a public *_net_G.pth (default: {DEFAULT_CHECKPOINT})")
    p.add_argument("--encoder", help="public-code encoder checkpoint (*_net_E.pth), for reference styles")
    p.add_argument("--config", help="dataset preset when the checkpoint has no config (cityscapes, ade20k, celeba, ...)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config option")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
    p.add_argument("--device", default="cpu")
    return p


class StartError(Exception):
    """Why the studio cannot start; printed as one line."""


def _load(args):
    from inade.cli import _parse_overrides, load_models  # noqa: PLC0415
    from inade.utils.errors import UserError  # noqa: PLC0415
    from inade.studio.engine import Studio  # noqa: PLC0415

    checkpoint = Path(args.checkpoint) if args.checkpoint else DEFAULT_CHECKPOINT
    if args.checkpoint is None and not checkpoint.is_file():
        raise StartError(f"{checkpoint} does not exist: run `make train` first, or pass --checkpoint")
    try:
        G, E, cfg = load_models(checkpoint, args.config, _parse_overrides(args.set), args.encoder, args.device)
        return Studio(G, E, cfg, title=str(checkpoint))
    except (UserError, FileNotFoundError, ValueError) as err:
        raise StartError(str(err)) from err


def main(argv: list[str] | None = None) -> int:
    """Load the model, bind, print the address, serve until Ctrl-C; 2 on a user error."""
    args = build_parser().parse_args(argv)
    try:
        from inade.studio.server import allowed_hosts, bind, make_server, url_of  # noqa: PLC0415
    except ImportError as err:
        print(f"error: the studio needs its extra dependencies ({err.name}): pip install 'inade[studio]'", file=sys.stderr)
        return 2
    try:
        studio = _load(args)
        sock = bind(args.host, args.port)
    except StartError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: cannot listen on {args.host}:{args.port} ({err.strerror or err})", file=sys.stderr)
        return 2
    print(f"INADE Studio ({studio.cfg.name}, {studio.size[1]}×{studio.size[0]}) at {url_of(sock)}", flush=True)
    if sock.getsockname()[0] not in ("127.0.0.1", "::1"):
        print(f"warning: listening on {args.host}: anyone who can reach this machine can use the studio", flush=True)
    make_server(studio, hosts=allowed_hosts(args.host)).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
