"""Training under `torchrun --nproc_per_node N`: one process group helper for every training loop.

A process started by torchrun finds WORLD_SIZE > 1 in its environment and joins the group (gloo on CPU, nccl on
CUDA); a plain `python` process is rank 0 of 1 and never touches torch.distributed. The loops keep their own
arithmetic (each rank's share of a batch, its loss weight); what they share is here.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["all_sum", "barrier", "process_group"]


def process_group(device: str = "cpu") -> tuple[int, int, torch.device]:
    """(rank, number of processes, this process's device); under torchrun, joins the process group first.
    `device` is "cpu", "cuda" or "auto" (CUDA when available)."""
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if not cuda:
        return rank, world, torch.device("cpu")
    gpu = torch.device(f"cuda:{os.environ.get('LOCAL_RANK', '0')}")
    torch.cuda.set_device(gpu)  # nccl collectives run on the current device
    return rank, world, gpu


def all_sum(values: list[float], world: int, device: torch.device | None = None) -> list[float]:
    """Element-wise sum of `values` over all processes (the values themselves in one process)."""
    if world == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return [float(v) for v in tensor.tolist()]


def barrier(world: int) -> None:
    """Wait for every process (nothing to wait for in one process)."""
    if world > 1:
        dist.barrier()
