"""``python -m inade.metrics``: FID, statistics, LPIPS, and every metric of a results folder.

    python -m inade.metrics fid REAL_DIR_OR_STATS FAKE_DIR [--inception_weights F] [--resize_size S]
    python -m inade.metrics stats IMAGE_DIR OUT.npz|OUT_DIR     # OUT_DIR gets m.npy, s.npy (train_mu_si layout)
    python -m inade.metrics lpips DIR_A DIR_B                    # mean LPIPS over same-named images
    python -m inade.metrics all results/inade_synthetic/test_latest [--real STATS] [--segmenter S]
    python -m inade.metrics synthetic --checkpoint checkpoints/inade_synthetic/latest.pt   # known truth

A results folder of ``python -m inade.test`` is checked against its ``test_run.json`` (every file
listed, sizes and SHA-256, no unlisted image) before any metric reads it: a folder that mixes runs
is refused.

Weight files: ``--inception_weights`` / ``$INADE_INCEPTION_WEIGHTS``, ``--alexnet_weights`` /
``$INADE_ALEXNET_WEIGHTS`` (``--vgg16_weights`` / ``$INADE_VGG16_WEIGHTS``), ``--lpips_weights`` /
``$INADE_LPIPS_WEIGHTS`` (lpips' ``weights/v0.1`` folder). ``all`` skips, and says so, a metric
whose files are not given; the other commands need theirs. Errors: one line ``error: …``, exit 2.
"""
from __future__ import annotations

import argparse
import sys

from inade.metrics.weights import ALEXNET, INCEPTION, LPIPS_LIN, VGG16
from inade.training.options import resize_size
from inade.utils.arguments import ArgumentParser, at_least, device, positive_finite
from inade.utils.errors import report, run_command


def _weights_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--inception_weights", default=None, help=f"{INCEPTION.filename} (default ${INCEPTION.env})")
    p.add_argument("--alexnet_weights", default=None, help=f"{ALEXNET.filename} (default ${ALEXNET.env})")
    p.add_argument("--vgg16_weights", default=None, help=f"{VGG16.filename} (default ${VGG16.env})")
    p.add_argument("--lpips_weights", default=None, help="lpips weights/v0.1 folder or its alex.pth / vgg.pth "
                   f"(default ${LPIPS_LIN['alex'].env})")
    p.add_argument("--lpips_net", default="alex", choices=("alex", "vgg"))
    p.add_argument("--device", type=device, default="cpu")
    p.add_argument("--batch_size", type=at_least(1), default=50, help="images per Inception forward (none is dropped)")
    p.add_argument("--resize_size", type=resize_size, default=-1, help="pre-resize to (S, ratio*S), the public script's option")
    p.add_argument("--resize_ratio", type=positive_finite, default=2.0, help="width/height of --resize_size (2: Cityscapes)")
    p.add_argument("--method", default="sqrtm", choices=("sqrtm", "eigh"), help="matrix square root (sqrtm = pytorch-fid)")
    p.add_argument("--no_progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m inade.metrics", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fid", help="FID between two folders (or statistics and a folder)")
    f.add_argument("real", help="image folder, .npz statistics, or a folder with m.npy and s.npy")
    f.add_argument("fake", help="image folder (or statistics)")
    f.add_argument("--json", default=None, help="also write the result here")
    _weights_args(f)
    s = sub.add_parser("stats", help="save FID statistics of an image folder")
    s.add_argument("images")
    s.add_argument("out", help="OUT.npz (pytorch-fid) or a folder (m.npy, s.npy: the public code's train_mu_si/<dataset>)")
    _weights_args(s)
    lp = sub.add_parser("lpips", help="mean LPIPS between same-named images of two folders")
    lp.add_argument("a")
    lp.add_argument("b")
    _weights_args(lp)
    a = sub.add_parser("all", help="every metric of a python -m inade.test results folder -> JSON + Markdown")
    a.add_argument("results", help="results/<name>/test_<epoch> (images/synthesized_image*/, images/real_image/, "
                   "images/input_label/, test_run.json)")
    a.add_argument("--real", default=None, help="FID reference: statistics or an image folder (default: images/real_image/)")
    a.add_argument("--segmenter", default=None, help="TorchScript file or module:function for mIoU / accuracy")
    a.add_argument("--ignore_index", type=int, default=None, help="label not counted by mIoU (default: don't-care class)")
    a.add_argument("--checkpoint", default=None, help="generator for mISD/mOID, mCSD/mOCD (default: from test_run.json)")
    a.add_argument("--no_generator", action="store_true", help="skip the resampling metrics")
    a.add_argument("--layouts", type=at_least(1), default=16, help="test layouts for the resampling metrics")
    a.add_argument("--samples", type=at_least(2), default=4, help="images per resampled region (pairs: samples*(samples-1)/2)")
    a.add_argument("--max_regions", type=at_least(1), default=None, help="regions per layout (default all)")
    a.add_argument("--rounds", type=at_least(1), default=10, help="LPIPS diversity: random pairs of style groups")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--json", default=None, help="default RESULTS/metrics.json")
    a.add_argument("--md", default=None, help="default RESULTS/metrics.md")
    _weights_args(a)
    _synthetic_parser(sub)
    return p


def _synthetic_parser(sub) -> None:
    """The ``synthetic`` subcommand (:mod:`inade.metrics.synthetic`)."""
    p = sub.add_parser("synthetic", help="diversity and colour distributions on the synthetic set (known truth)",
                       description="Evaluate a generator on the synthetic set, where the truth is known.")
    p.add_argument("--checkpoint", required=True, help="train.py's latest.pt (or a *_net_G.pth with --config synthetic)")
    p.add_argument("--config", default=None, help="preset when the checkpoint holds no configuration (synthetic)")
    p.add_argument("--scenes", type=at_least(1), default=32, help="held-out synthetic scenes")
    p.add_argument("--samples", type=at_least(2), default=6, help="draws per scene and per resampled instance")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data_seed", type=int, default=0, help="the synthetic set's seed (train.py --seed)")
    p.add_argument("--json", default=None, help="output JSON (default: eval_synthetic.json beside the checkpoint)")
    p.add_argument("--device", type=device, default="cpu")


def main(argv=None) -> int:
    """Options first (no torch: ``--help`` and a mistyped option answer at once), then the command."""
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731

    def _main() -> int:
        args = build_parser().parse_args(argv)
        from inade.metrics.commands import COMMANDS  # noqa: PLC0415 - torch and the networks
        from inade.metrics.weights import MetricsError  # noqa: PLC0415

        try:
            return COMMANDS[args.command](args, log) or 0
        except MetricsError as e:
            return report(e)

    return run_command(_main)


if __name__ == "__main__":
    sys.exit(main())
