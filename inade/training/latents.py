"""Per-sample latents: the noise table rows and ``z`` of every training sample are
a pure function of ``(seed, step, pass, dataset index)``.

So a step's randomness does not depend on how the global batch is split across
processes (a ``torchrun`` step equals one process on the whole batch) nor on the
history of any generator state (resuming replays the same draws). Row ``l`` of a
sample's noise is the same whatever the number ``L`` of rows drawn, since rows are
drawn one after another from the sample's own generator.
"""
from __future__ import annotations

import numpy as np
import torch

G_PASS, D_PASS = 0, 1


def sample_generator(seed: int, step: int, which: int, index: int) -> torch.Generator:
    key = np.random.SeedSequence([seed, step, which, int(index)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(key[0]) << 32 | int(key[1]))


def style_seed(seed: int, index: int, k: int) -> int:
    """The seed of style ``k`` of test layout ``index`` (``inade.test``'s images, the FID during
    training): the same layout gets the same noise in every run and at every evaluation."""
    return (seed * 1_000_003 + index) * 4099 + k


def draw_latents(indices, num_instances: int, noise_nc: int, z_dim: int, *, seed: int, step: int, which: int):
    """``(noise [B, L, 2, noise_nc], z [B, z_dim])`` float32 on the CPU for the samples ``indices``.

    Args:
        indices: dataset index of each sample of the batch (``B`` ints).
        num_instances: ``L``, rows of the noise table.
        which: ``G_PASS`` (generator update) or ``D_PASS`` (discriminator update).
    """
    noise = torch.empty(len(indices), num_instances, 2, noise_nc)
    z = torch.empty(len(indices), z_dim)
    for b, index in enumerate(indices):
        g = sample_generator(seed, step, which, int(index))
        z[b] = torch.randn(z_dim, generator=g)
        for l in range(num_instances):
            noise[b, l] = torch.randn(2, noise_nc, generator=g)
    return noise, z
