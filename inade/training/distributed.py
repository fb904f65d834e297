"""One process or many: device choice, ``torchrun`` set-up, synchronised INADE statistics.

Under ``torchrun`` (``WORLD_SIZE > 1`` in the environment) every process joins a
process group -- NCCL on GPUs, gloo on CPUs -- the networks are wrapped in
``DistributedDataParallel`` (gradients averaged), and every :class:`INADENorm`
gets the group as its ``process_group``, so its batch statistics are those of the
global batch (synchronised BN, as the paper trains).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from inade.utils.errors import UserError


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    group: object = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def choose_device(gpu_ids: str | None, local_rank: int = 0) -> tuple[torch.device, str | None]:
    """``(device, note)``: ``gpu_ids`` ``-1`` is the CPU; otherwise a GPU when there is one."""
    if gpu_ids is not None and gpu_ids.strip() == "-1":
        return torch.device("cpu"), None
    try:
        ids = [int(i) for i in gpu_ids.split(",") if i.strip()] if gpu_ids else [0]
    except ValueError:
        raise UserError(f"--gpu_ids expects GPU numbers such as 0 or 0,1 (or -1 for the CPU), got {gpu_ids!r}") from None
    if not torch.cuda.is_available():
        note = None if gpu_ids is None else f"--gpu_ids {gpu_ids}: no CUDA GPU here, training on the CPU"
        return torch.device("cpu"), note
    if len(ids) > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        raise UserError(
            f"--gpu_ids {gpu_ids} lists {len(ids)} GPUs; run one process per GPU with "
            f"torchrun --nproc_per_node {len(ids)} train.py ... (CUDA_VISIBLE_DEVICES={gpu_ids})"
        )
    index = local_rank if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ids[0]
    torch.cuda.set_device(index)
    return torch.device("cuda", index), None


def setup(gpu_ids: str | None) -> tuple[Distributed, torch.device, str | None]:
    """Join the ``torchrun`` process group when there is one; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device, note = choose_device(gpu_ids, local)
    if world == 1:
        return Distributed(), device, note
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank, world, local, dist.group.WORLD), device, note


def cleanup(d: Distributed) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def sync_norm_statistics(module: torch.nn.Module, group) -> int:
    """Set ``process_group`` on every INADE norm of ``module``; returns how many."""
    from inade.nn import INADENorm  # noqa: PLC0415

    n = 0
    for m in module.modules():
        if isinstance(m, INADENorm):
            m.process_group = group
            n += 1
    return n


def any_process(flag: bool, d: Distributed, device: torch.device) -> bool:
    """True when ``flag`` is set in any process (all processes must call it)."""
    if not d.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=d.group)
    return bool(t.item() > 0)


def mean_over_processes(values: dict[str, torch.Tensor], d: Distributed) -> dict[str, float]:
    """``{name: mean over the processes}`` of 0-dim tensors (this process's losses), as floats:
    one all-reduce (all processes must call it, with the same names); alone, the values themselves."""
    if not values:
        return {}
    t = torch.stack([v.detach().float().reshape(()) for v in values.values()])
    if d.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=d.group)
        t = t / d.world_size
    return dict(zip(values, t.tolist()))


def wrap(module: torch.nn.Module, d: Distributed, device: torch.device):
    """``module`` in DistributedDataParallel when distributed, else itself.

    Buffers are not re-broadcast each forward: the norms' running statistics are
    the global batch's on every process and the spectral-norm vectors follow the
    (identical) weights, so they stay equal without it.
    """
    if not d.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: PLC0415

    ids = [device.index] if device.type == "cuda" else None
    return DDP(module, device_ids=ids, broadcast_buffers=False)
