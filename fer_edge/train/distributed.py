"""DistributedDataParallel under `torchrun`: the same `fer-edge train` command, N processes.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them training runs in one process and
every function here is a no-op. Rank 0 alone writes files and logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InputError


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def detect() -> DistEnv:
    """The torchrun environment, or a single process."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as e:
        raise InputError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers (set by torchrun): {e}") from e
    return DistEnv(rank, world, local)


def setup(env: DistEnv, device: torch.device) -> torch.device:
    """Join the process group; on CUDA each rank takes the GPU of its LOCAL_RANK."""
    if not env.enabled:
        return device
    import torch.distributed as dist

    if device.type == "cuda":
        if env.local_rank >= torch.cuda.device_count():
            raise InputError(f"LOCAL_RANK {env.local_rank} but torch sees {torch.cuda.device_count()} CUDA devices")
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def teardown(env: DistEnv) -> None:
    if env.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def wrap(module: torch.nn.Module, env: DistEnv, device: torch.device, *, find_unused: bool = False) -> torch.nn.Module:
    """DDP over the parameters trainable now: wrap again whenever `requires_grad` changes (a
    transfer phase ending), since DDP fixes its gradient buckets at construction.
    `find_unused`: some trainable parameters get no gradient (e.g. the classifier under a pure
    triplet loss)."""
    if not env.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused)


def broadcast(obj: Any, env: DistEnv) -> Any:
    """Rank 0's value on every rank (decisions such as early stopping must agree)."""
    if not env.enabled:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any, env: DistEnv) -> list[Any]:
    """Every rank's value, in rank order, on every rank."""
    if not env.enabled:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def all_sum(values: list[float], env: DistEnv) -> list[float]:
    if not env.enabled:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.cpu().tolist()


def barrier(env: DistEnv) -> None:
    if env.enabled:
        import torch.distributed as dist

        dist.barrier()
