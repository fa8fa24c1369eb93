"""Data-parallel training across processes (``torchrun``): setup and gradient reduction.

Every process holds a full replica of the network and of the latent tables. Each step, every
process computes the losses of its share of the global batch, divided by the global batch
size; the gradients are then summed over processes (one all-reduce of all network gradients
in a flat buffer, one of the touched latent rows, see :mod:`nphm.training.latents`), so all
replicas apply the same update and stay identical. The reduction is explicit rather than
``DistributedDataParallel``'s hooks because the losses differentiate through
``torch.autograd.grad(create_graph=True)`` and the last batch of an epoch may leave a process
without items; both are awkward for DDP's reducer, neither matters here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Optional, Union

import torch
import torch.distributed as dist

from nphm.utils.device import resolve_device


@dataclass(frozen=True)
class DistInfo:
    """Rank, world size and local rank of this process (``world_size == 1``: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: Optional[Union[str, torch.device]] = None) -> tuple:
    """Join the process group started by ``torchrun`` (env ``WORLD_SIZE`` > 1), if any.

    Backend: NCCL on CUDA, gloo on CPU. Each process uses ``cuda:{LOCAL_RANK}`` on CUDA.

    Returns:
        ``(DistInfo, torch.device)``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device)
    if world <= 1:
        return DistInfo(), device
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local_rank), device


def shutdown_distributed(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_module(module: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's parameters and buffers to every process."""
    if not info.enabled:
        return
    for tensor in module.state_dict().values():
        dist.broadcast(tensor, src=0)


def all_reduce_gradients(params: Iterable[torch.nn.Parameter], info: DistInfo) -> None:
    """Sum the (dense) gradients of ``params`` over all processes, in one flat buffer.

    Parameters without a gradient in this process contribute zeros (and receive the sum).
    """
    if not info.enabled:
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum of ``tensor`` over all processes (in place; returned for convenience)."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
