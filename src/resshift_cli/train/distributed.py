"""DistributedDataParallel only when `torchrun` set the rank variables (NCCL on CUDA, gloo otherwise)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from resshift_cli.errors import UsageError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """Rank 0 writes checkpoints, logs and validation results."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def start(device: torch.device) -> World:
    """Join the process group torchrun describes (a no-op world of one otherwise)."""
    if not launched_by_torchrun():
        return World()
    world = World(
        int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    )
    if world.size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world


def device_for(device: torch.device, world: World) -> torch.device:
    """Under torchrun each process takes CUDA device LOCAL_RANK; other devices are used as given."""
    if device.type == "cuda" and world.distributed:
        if world.local_rank >= torch.cuda.device_count():
            raise UsageError(
                f"LOCAL_RANK {world.local_rank}: only {torch.cuda.device_count()} CUDA device(s)"
            )
        torch.cuda.set_device(world.local_rank)
        return torch.device("cuda", world.local_rank)
    return device


def all_sum(value: Tensor, world: World) -> Tensor:
    """The sum of `value` over all processes (itself in a world of one)."""
    if world.distributed:
        value = value.clone()
        dist.all_reduce(value)
    return value


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def stop(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
