"""A resumable, distributed sampler whose order is a pure function of ``(seed, epoch)``.

Each epoch is a permutation of the dataset cut into *global* batches of
``batch_size · world_size`` samples; process ``rank`` takes its slice of every
global batch. So one process with ``batch_size · world_size`` sees exactly the
samples that ``world_size`` processes see together, in the same order -- the
property that makes a multi-process step equal a single-process one. Keys are
``(index, augmentation_seed)`` pairs: the loaders' crops and flips depend only on
the key, never on a worker's random state, so resuming at ``(epoch, batch)``
replays the data exactly.
"""
from __future__ import annotations

import numpy as np
import torch


class EpochSampler(torch.utils.data.Sampler):
    """Yields ``(index, augmentation_seed)`` for this process.

    Args:
        num_samples: dataset length.
        batch_size: per-process batch size.
        seed: data-order seed.
        rank, world_size: this process and the number of processes.
        shuffle: permute each epoch (else dataset order).
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_samples < batch_size * world_size:
            raise ValueError(
                f"the dataset has {num_samples} samples, fewer than one global batch "
                f"(batch_size {batch_size} x {world_size} processes)"
            )
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.epoch, self.start_batch = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.num_samples // (self.batch_size * self.world_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Iterate epoch ``epoch`` from its batch ``start_batch`` on (resume mid-epoch)."""
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise ValueError(f"start_batch must be in 0 ... {self.batches_per_epoch}, got {start_batch}")
        self.epoch, self.start_batch = epoch, start_batch

    def order(self, epoch: int) -> torch.Tensor:
        """The epoch's permutation of all sample indices."""
        if not self.shuffle:
            return torch.arange(self.num_samples)
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0]))
        return torch.randperm(self.num_samples, generator=g)

    def __iter__(self):
        perm = self.order(self.epoch).tolist()
        gb = self.batch_size * self.world_size
        for b in range(self.start_batch, self.batches_per_epoch):
            local = perm[b * gb + self.rank * self.batch_size : b * gb + (self.rank + 1) * self.batch_size]
            for i in local:
                yield i, augmentation_seed(self.seed, self.epoch, i)

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size


def augmentation_seed(seed: int, epoch: int, index: int) -> int:
    """Seed of sample ``index``'s crop and flip in ``epoch``."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])
