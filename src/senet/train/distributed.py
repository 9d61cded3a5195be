"""Many processes with PyTorch's own tools: torchrun's environment, DDP, gloo on CPU / nccl on CUDA.

``torchrun --nproc_per_node=N -m senet train ...`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
:func:`setup` reads them, joins the process group and picks the device. Without them the run is a
single process and nothing here does anything. Only rank 0 writes files (:attr:`Dist.is_main`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..devices import pick_device

__all__ = ["Dist", "all_reduce_sum", "broadcast_buffers", "pick_device", "setup", "teardown"]


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def setup() -> Dist:
    """Join the torchrun process group if the environment names one (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(local_rank=local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world
        )
    return Dist(rank, world, local_rank, device)


def teardown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], d: Dist) -> list[float]:
    """Sum a few numbers over all ranks (identity on one process)."""
    if not d.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def broadcast_buffers(model: torch.nn.Module, d: Dist) -> None:
    """Give every rank rank 0's buffers (BN running statistics), as DDP does before each forward.

    Called at the end of an epoch, so that every rank evaluates, and rank 0 saves, one model.
    """
    if d.enabled:
        for b in model.buffers():
            dist.broadcast(b, src=0)
