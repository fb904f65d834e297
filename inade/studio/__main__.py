"""``python -m inade.studio``: start INADE Studio on a local address and print it.

    python -m inade.studio [--checkpoint C] [--encoder E] [--config NAME] [--set KEY=VALUE]
                           [--host 127.0.0.1] [--port 8000] [--device cpu]

Without ``--checkpoint`` it opens ``checkpoints/inade_synthetic/latest.pt``, what
``make train`` writes. A public ``*_net_G.pth`` needs ``--config`` (its dataset
preset) and, for reference styles, ``--encoder`` (its ``*_net_E.pth``). ``--port 0``
takes a free port. It binds to 127.0.0.1 unless ``--host`` says otherwise. Every reason
it cannot start (an option, the checkpoint, the address) is one line ``error: …`` and
exit code 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inade.utils.arguments import ArgumentParser, check_device
from inade.utils.cpu import thread_defaults
from inade.utils.errors import UserError, run_command

DEFAULT_CHECKPOINT = Path("checkpoints/inade_synthetic/latest.pt")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m inade.studio", description="INADE Studio: paint, click, re-draw.")
    p.add_argument("--checkpoint", help=f"our checkpoint or a public *_net_G.pth (default: {DEFAULT_CHECKPOINT})")
    p.add_argument("--encoder", help="public-code encoder checkpoint (*_net_E.pth), for reference styles")
    p.add_argument("--config", help="dataset preset when the checkpoint has no config (cityscapes, ade20k, celeba, ...)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config option")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
    p.add_argument("--device", default="cpu")
    return p


class StartError(UserError):
    """Why the studio cannot start; printed as one line."""


def _load(args):
    from inade.cli import _parse_overrides, load_models  # noqa: PLC0415
    from inade.studio.engine import Studio  # noqa: PLC0415

    checkpoint = Path(args.checkpoint) if args.checkpoint else DEFAULT_CHECKPOINT
    if args.checkpoint is None and not checkpoint.is_file():
        raise StartError(f"{checkpoint} does not exist: run `make train` first, or pass --checkpoint")
    device = check_device(args.device)
    try:
        G, E, cfg = load_models(checkpoint, args.config, _parse_overrides(args.set), args.encoder, device)
        return Studio(G, E, cfg, title=str(checkpoint))
    except (UserError, FileNotFoundError, ValueError) as err:
        raise StartError(str(err)) from err


def _listen(host: str, port: int):
    from inade.studio.server import bind  # noqa: PLC0415

    try:
        return bind(host, port)
    except OSError as err:  # in use, no such address or name (socket.gaierror), not this machine's
        raise StartError(f"cannot listen on --host {host} --port {port} ({err.strerror or err})") from None


def main(argv: list[str] | None = None) -> int:
    """Load the model, bind, print the address, serve until Ctrl-C; a user error raises :class:`UserError`."""
    thread_defaults()  # OMP_WAIT_POLICY=PASSIVE unless set: before torch loads OpenMP (inade.utils.cpu)
    args = build_parser().parse_args(argv)
    # a missing module: run_command names the environment or the extra (pip install "inade[studio]")
    from inade.studio.server import allowed_hosts, make_server, url_of  # noqa: PLC0415
    if not 0 <= args.port <= 65535:  # before the model loads: a typo costs no wait
        raise StartError(f"--port {args.port}: must be 0 … 65535 (0: any free port)")
    studio = _load(args)
    sock = _listen(args.host, args.port)
    print(f"INADE Studio ({studio.cfg.name}, {studio.size[1]}×{studio.size[0]}) at {url_of(sock)}", flush=True)
    address = sock.getsockname()[0]
    hosts = allowed_hosts(address)
    if hosts is None:
        print(f"warning: listening on {args.host}: anyone who can reach this machine can use the studio", flush=True)
    make_server(studio, hosts=hosts).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
