"""Learning rates: Adam with TTUR, constant for ``niter`` epochs, then a linear decay
to zero over ``niter_decay`` epochs (the public code's schedule, applied per
iteration instead of once per epoch)."""
from __future__ import annotations


def learning_rates(cfg) -> tuple[float, float, tuple[float, float]]:
    """``(lr_G, lr_D, (beta1, beta2))``: TTUR gives G ``lr/2`` and D ``2·lr`` (1e-4 and
    4e-4 for the default 2e-4); ``no_TTUR`` gives both ``lr``."""
    if cfg.no_TTUR:
        return cfg.lr, cfg.lr, (cfg.beta1, cfg.beta2)
    return cfg.lr / 2, cfg.lr * 2, (cfg.beta1, cfg.beta2)


def lr_factor(step: int, steps_per_epoch: int, niter: int, niter_decay: int) -> float:
    """Multiplier of the base learning rate at iteration ``step`` (0-based).

    1 during the first ``niter`` epochs, then falling linearly to 0 at the end of
    epoch ``niter + niter_decay``.
    """
    if niter_decay <= 0:
        return 1.0
    decay_start = niter * steps_per_epoch
    decay_steps = niter_decay * steps_per_epoch
    return max(0.0, min(1.0, 1.0 - (step - decay_start) / decay_steps))
