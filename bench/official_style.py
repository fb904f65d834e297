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
