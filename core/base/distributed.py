"""torchrun + DistributedDataParallel support. Only rank 0 writes the run store, checkpoints
and logs; every process-wide side effect asks `is_main()` first.

Collectives for work done in shares (the frozen-feature pass): `share` picks this rank's part of a list,
`gather` brings every rank's Python objects to every rank, `broadcast` rank 0's. Outside a process group
they are the identity, so the same code runs in one process."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from core.base import runtime


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def local_world_size() -> int:
    """Processes of this launch on this machine (they share its cores)."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def active() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def share(n: int) -> range:
    """This rank's contiguous part of `n` items (parts differ by at most one; all of them in one process)."""
    if not active():
        return range(n)
    size, me = dist.get_world_size(), dist.get_rank()
    base, extra = divmod(n, size)
    start = me * base + min(me, extra)
    return range(start, start + base + (1 if me < extra else 0))


def gather(obj) -> list:
    """Every rank's `obj`, in rank order, on every rank ([obj] in one process)."""
    if not active():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj):
    """Rank 0's `obj` on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, 0)
    return box[0]


def barrier() -> None:
    if active():
        dist.barrier()


def setup() -> torch.device | None:
    """Initialise the process group when launched by torchrun; returns this rank's device."""
    if world_size() <= 1:
        return None
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    if torch.cuda.is_available():
        local = local_rank()
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def all_reduce_sum(values: list[float]) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()


def broadcast_flag(flag: bool) -> bool:
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    tensor = torch.tensor([int(flag)])
    dist.broadcast(tensor, 0)
    return bool(tensor.item())


def finish_together() -> None:
    """End the part the ranks do together: leave the process group, and give rank 0, which goes on
    alone (the head's fit, the evaluation, later stages), the cores the other ranks of its machine had."""
    if not active():
        return
    cleanup()
    if is_main():  # from here on a single process: the thread and worker policy gives it the whole machine
        os.environ["WORLD_SIZE"] = os.environ["LOCAL_WORLD_SIZE"] = "1"
        torch.set_num_threads(runtime.cpu_count())


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
