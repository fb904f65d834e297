"""Official-style baselines: our own re-implementation of the *approach* of the
authors' public code (tzt101/INADE), kept for benchmarks only and labelled as such.

That code builds dense one-hot maps ``[B, L, H, W]`` and combines them with
``einsum`` in every norm layer, pools per instance with a Python loop over
instances, and runs the instance-aware convolution on a full ``unfold`` of its
input. No line of it is copied here: these functions reproduce what it computes
and how much memory it touches, so that speed-ups are measured against it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def one_hot_map(index: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """``[B, H, W]`` ids -> dense ``[B, num_classes, H, W]`` one-hot map (as the public code builds)."""
    return F.one_hot(index.long(), num_classes).permute(0, 3, 1, 2).to(dtype)


def modulation(x, inst, gamma, beta, *, running_mean=None, running_var=None, training=True, momentum=0.1, eps=1e-5):
    """instance_modulation the public code's way: one-hot instance map, two ``einsum``s to
    per-pixel ``γ, β`` maps ``[B, C, H, W]``, then batch norm and modulation."""
    onehot = one_hot_map(inst, gamma.shape[1], x.dtype)
    gamma_map = torch.einsum("blc,blhw->bchw", gamma, onehot)
    beta_map = torch.einsum("blc,blhw->bchw", beta, onehot)
    x_hat = F.batch_norm(x, running_mean, running_var, None, None, training, momentum, eps)
    return x_hat * gamma_map + beta_map


def avg_pool_loop(x, inst, num_instances):
    """instance_avg_pool the public code's way: a dense one-hot instance map, then a
    Python loop over instances, each masking the whole map and summing it, divided by
    the instance's pixel count (1 where empty, so empty instances give 0).

    ``x`` is one ``[B, C, H, W]`` map or a tuple/list of them (the encoder pools four
    maps, each with its own loop, as the public code does); returns ``[B, L, C]`` or
    a tuple of them.
    """
    if isinstance(x, (list, tuple)):
        return tuple(avg_pool_loop(t, inst, num_instances) for t in x)
    onehot = one_hot_map(inst, num_instances, x.dtype)
    rows = []
    for l in range(num_instances):
        mask = onehot[:, l : l + 1]  # [B, 1, H, W]
        pixels = mask.sum((2, 3), keepdim=True)
        pixels = torch.where(pixels == 0, torch.ones_like(pixels), pixels)
        rows.append(((x * mask).sum((2, 3), keepdim=True) / pixels)[:, :, 0, 0])  # [B, C]
    return torch.stack(rows, 1)
