"""Multi-GPU training with torchrun: process group set-up and feature gathering for the contrastive loss.

Without torchrun (WORLD_SIZE unset or 1) every function here is a no-op, so one CPU process works.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def setup(device_type: str) -> DistContext:
    """Join the torchrun process group when WORLD_SIZE > 1 (nccl on GPU, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def teardown(context: DistContext) -> None:
    if context.active and dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: DistContext) -> None:
    if context.active:
        dist.barrier()


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` [b, ...] from every rank along dim 0 -> [world * b, ...], in rank order.

    The local part keeps its autograd graph; other ranks' parts are constants (each rank back-propagates
    its own part, and DDP sums the gradients), the usual choice (open_clip's gather_features, local
    part kept). Identity without a process group.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.detach().contiguous())
    parts[dist.get_rank()] = tensor
    return torch.cat(parts, dim=0)


def all_sum(value: float, device) -> float:
    """Sum of a number over ranks (the number itself without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    tensor = torch.tensor(float(value), device=device)
    dist.all_reduce(tensor)
    return float(tensor)


def mean_over_ranks(values: dict[str, float], device) -> dict[str, float]:
    """Average logged numbers over ranks (each rank's L_gen covers its own share of the batch)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    tensor = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return dict(zip(values, (tensor / dist.get_world_size()).tolist()))
