"""Training INADE: options (the public code's names), the loop, checkpoints,
learning-rate schedule, per-sample latents, sample grids, multi-process set-up.

``train.py`` at the repository root runs :func:`inade.training.trainer.main`.
"""
from inade.training.checkpoint import atomic_save, load_checkpoint, load_public, save_public
from inade.training.options import parse_options
from inade.training.trainer import Trainer, main

__all__ = ["Trainer", "atomic_save", "load_checkpoint", "load_public", "main", "parse_options", "save_public"]
