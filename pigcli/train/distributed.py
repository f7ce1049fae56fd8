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
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if device_type == "cuda":  # NCCL binds each process to the current GPU: this rank's own
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank)


def barrier(context: DistContext) -> None:
    """Wait for every rank, on the way out of a run that ended normally: gloo aborts a process
    ('terminate called without an active exception') that destroys its group while a peer still uses
    it, e.g. rank 0 writing the final checkpoints. Not on an error path: a peer that died never comes."""
    if context.active and dist.is_initialized():
        dist.barrier()


def teardown(context: DistContext) -> None:
    if context.active and dist.is_initialized():
        dist.destroy_process_group()


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` [b, ...] from every rank along dim 0 -> [world * b, ...], in rank order.

    Differentiable (torch.distributed.nn's all_gather): the local part keeps its graph, and in the
    backward each rank receives the gradients that every rank's copy of the loss sends to its part.
    With the same global-batch loss on every rank and DDP's gradient averaging, this gives exactly the
    single-process gradient for every parameter, including those that act on the gathered features
    (the logit scale; the fusioner in xpool), which the constant-gather variant (open_clip's default)
    scales differently from the rest. Identity without a process group.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()), dim=0)


def all_sum(value: float, device) -> float:
    """Sum of a number over ranks (the number itself without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    tensor = torch.tensor(float(value), device=device)
    dist.all_reduce(tensor)
    return float(tensor)


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """Average logged numbers [..] over ranks (each rank's L_gen covers its own share of the batch);
    the tensor itself without a process group."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    total = values.double()
    dist.all_reduce(total)
    return total / dist.get_world_size()


def any_rank(flags: list[bool], device) -> list[bool]:
    """Each flag true on any rank (a decision every rank must take together: stop, save); the flags
    themselves without a process group."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flags
    tensor = torch.tensor(flags, dtype=torch.int32, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return [bool(v) for v in tensor.tolist()]
