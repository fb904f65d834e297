"""Learning rates: Adam with TTUR, the public code's schedule.

The public code (tzt101/INADE, SPADE's ``Pix2PixTrainer.update_learning_rate``, called by its
``train.py`` after every epoch ``e = 1, 2, …``) keeps ``lr`` for the first ``niter + 1``
epochs and, after each epoch ``e > niter``, subtracts ``lr / niter_decay``; the new rate is
split by TTUR (G ``new_lr / 2``, D ``2 · new_lr``) or given to both (``no_TTUR``). So epoch
``niter + k`` runs at ``lr - (k - 1) · lr / niter_decay`` and the last epoch at
``lr / niter_decay``. :func:`rates_at_step` gives those rates for any iteration, computed
from the step alone (the same subtractions in the same order, so the values are equal to
the last bit), which is what makes a resumed run land on the uninterrupted run's rate.

``--lr_decay_every_iter`` (ours) decays at every iteration instead, reaching 0 at the
end of epoch ``niter + niter_decay`` (:func:`lr_factor`).
"""
from __future__ import annotations


def learning_rates(cfg) -> tuple[float, float, tuple[float, float]]:
    """``(lr_G, lr_D, (beta1, beta2))`` at the start: TTUR gives G ``lr/2`` and D ``2·lr``
    (1e-4 and 4e-4 for the default 2e-4); ``no_TTUR`` gives both ``lr``."""
    return (*split_lr(cfg.lr, cfg.no_TTUR), (cfg.beta1, cfg.beta2))


def split_lr(lr: float, no_TTUR: bool) -> tuple[float, float]:
    """``(lr_G, lr_D)`` for the base rate ``lr``: ``(lr/2, 2·lr)`` with TTUR, ``(lr, lr)`` without."""
    return (lr, lr) if no_TTUR else (lr / 2, lr * 2)


def epoch_lr(epoch: int, lr: float, niter: int, niter_decay: int) -> float:
    """Base rate during epoch ``epoch`` (0-based), as the public code's epoch-end updates leave it:
    ``lr`` minus ``lr / niter_decay`` once for every finished epoch after the first ``niter + 1``."""
    decays = max(0, min(epoch - niter, niter_decay))  # epochs e > niter that ended before this one
    new_lr = lr
    for _ in range(decays):  # the public code's repeated subtraction, bit for bit
        new_lr = new_lr - lr / niter_decay
    return new_lr


def lr_factor(step: int, steps_per_epoch: int, niter: int, niter_decay: int) -> float:
    """``--lr_decay_every_iter``: multiplier of the base rate at iteration ``step`` (0-based).

    1 during the first ``niter`` epochs, then falling linearly at every iteration to 0 at
    the end of epoch ``niter + niter_decay``.
    """
    if niter_decay <= 0:
        return 1.0
    decay_start = niter * steps_per_epoch
    decay_steps = niter_decay * steps_per_epoch
    return max(0.0, min(1.0, 1.0 - (step - decay_start) / decay_steps))


def rates_at_step(step: int, steps_per_epoch: int, *, lr: float, no_TTUR: bool, niter: int, niter_decay: int,
                  every_iter: bool = False) -> tuple[float, float]:
    """``(lr_G, lr_D)`` of iteration ``step`` (0-based), a pure function of the step.

    Default: the public code's epoch-end decay (:func:`epoch_lr` of epoch
    ``step // steps_per_epoch``); ``every_iter``: :func:`lr_factor`'s per-iteration decay.
    """
    if every_iter:
        factor = lr_factor(step, steps_per_epoch, niter, niter_decay)
        lr_G, lr_D = split_lr(lr, no_TTUR)
        return lr_G * factor, lr_D * factor
    return split_lr(epoch_lr(step // steps_per_epoch, lr, niter, niter_decay), no_TTUR)
