"""Train INADE.

    python train.py                      # the built-in synthetic set, CPU, a few minutes
    python train.py --name inade_cityscapes --dataset_mode cityscapes --use_vae \\
        --dataroot datasets/cityscapes --batchSize 8 --niter 100 --niter_decay 100
    torchrun --nproc_per_node 4 train.py ...   # one process per GPU (global --batchSize)

Options keep the names of the authors' public code (``python train.py --help``).
Outputs: ``<checkpoints_dir>/<name>/`` (``latest.pt`` for ``--continue_train``,
``latest_net_{G,D,E}.pth`` in the public code's format, ``samples/*.png``).
The loop itself is :mod:`inade.training.trainer`. A user error (a missing dataroot
or file, a class id outside ``label_nc``, an unreadable, damaged or NaN checkpoint,
a folder that already holds a trained model without ``--continue_train`` or
``--overwrite``, a diverged run) prints one line ``error: …`` on stderr and exits
with code 2; a diverged run keeps its last good checkpoint (docs/TRAINING.md).
Afterwards: ``python -m inade.test --name <name>``, then
``python -m inade.metrics all results/<name>/test_latest``.
"""
import sys

from inade.utils.cpu import thread_defaults
from inade.utils.errors import run_command


def main(argv=None) -> int:
    """The options first, without torch (``--help`` and a mistyped option answer at once; a Python
    without the project's dependencies is told which environment to use), then the trainer."""
    thread_defaults()  # OMP_WAIT_POLICY=PASSIVE unless set: before torch loads OpenMP (inade.utils.cpu)

    def _main() -> int:
        from inade.training.options import build_parser, parse_options

        if not build_parser().parse_args(argv).continue_train:  # (a resumed run's options come from its checkpoint)
            parse_options(argv, resume=False)
        from inade.training.trainer import main as train

        return train(argv)

    return run_command(_main)


if __name__ == "__main__":
    sys.exit(main())
