"""Training under torchrun: the process group and this process's place in it.

`torchrun --nproc-per-node N -m indexer train ...` starts N processes and
describes the group in the environment (RANK, WORLD_SIZE, LOCAL_RANK, ...).
Each process joins it here: NCCL on GPUs, gloo on CPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class World:
    """This process's rank among `size` training processes."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that validates, checkpoints and saves."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def current_world() -> World:
    """The process group joined by `join_from_environment`, or a world of one."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return World()
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size())


def join_from_environment() -> World:
    """Join the process group that torchrun described, if there is one."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return World()
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return current_world()


def leave() -> None:
    """Leave the process group (at the end of a distributed command)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast(value, world: World):
    """Rank 0's `value`, on every rank."""
    if not world.active:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world: World) -> None:
    if world.active:
        import torch.distributed as dist

        dist.barrier()


def wrap_for_training(module, world: World):
    """`module` in DistributedDataParallel (gradients averaged over the ranks)."""
    if not world.active:
        return module
    import torch
    from torch.nn.parallel import DistributedDataParallel

    if torch.cuda.is_available():
        device = torch.cuda.current_device()
        return DistributedDataParallel(module, device_ids=[device])
    return DistributedDataParallel(module)


def _device() -> str:
    """Where collective tensors live: NCCL reduces only on GPUs."""
    import torch.distributed as dist

    return "cuda" if dist.get_backend() == "nccl" else "cpu"


def sum_over_ranks(value: float, world: World) -> float:
    if not world.active:
        return value
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.float64, device=_device())
    dist.all_reduce(tensor)
    return float(tensor[0])


def largest_difference_from_main(tensors: dict, world: World) -> float:
    """How far this rank's `tensors` are from rank 0's, reduced to the worst rank."""
    if not world.active:
        return 0.0
    import torch
    import torch.distributed as dist

    worst = torch.zeros(1, dtype=torch.float64, device=_device())
    for name in sorted(tensors):
        mine = tensors[name].detach().to(_device(), torch.float64)
        main = mine.clone()
        dist.broadcast(main, src=0)
        worst = torch.maximum(worst, (mine - main).abs().max().reshape(1))
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    return float(worst[0])
