"""instance_avg_pool: paper Eq. 4 (lands with issue 3)."""
from __future__ import annotations


def instance_avg_pool(x, inst, num_instances):
    """Mean of ``x [B, C, H, W]`` over each instance of ``inst [B, H, W]`` -> ``[B, L, C]``."""
    raise NotImplementedError("instance_avg_pool lands with issue 3")
