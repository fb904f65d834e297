"""Training INADE: options (the public code's names), the loop, checkpoints,
learning-rate schedule, per-sample latents, sample grids, multi-process set-up.

``train.py`` at the repository root runs :func:`inade.training.trainer.main`.

The names below are imported when first used (PEP 562), so importing one submodule
(``inade.training.checkpoint``, ``.latents``) does not load the trainer: the imports go
one way, ``inade.test`` -> ``trainer`` -> ``inade.metrics.train_eval`` -> ``checkpoint``, ``latents``.
"""
import importlib

_HOME = {"Trainer": "trainer", "main": "trainer", "parse_options": "options", "atomic_save": "checkpoint",
         "load_checkpoint": "checkpoint", "load_public": "checkpoint", "save_public": "checkpoint"}

__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
