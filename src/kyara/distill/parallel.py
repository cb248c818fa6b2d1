"""Data parallelism for distill(): one process per GPU, started by `torchrun`.

Each rank keeps its own teacher pool (rank-specific pose streams, so the ranks see different
examples) and its own student replica; after every backward pass the gradients are averaged over
the ranks in one flat all-reduce, which is what DistributedDataParallel does, without wrapping the
two morphers (they are trained by separate optimizers on separate batches). Rank 0 evaluates,
logs, checkpoints and writes the character file. With one process every call here is a no-op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def stream_key(self) -> tuple[int, ...]:
        """Extra generator key for this rank's random streams; empty on rank 0 so that a
        single-process run is unchanged."""
        return (self.rank, self.world) if self.rank else ()

    def average_gradients(self, parameters) -> None:
        """Mean of every parameter's .grad over the ranks (one flat all-reduce)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        grads = [p.grad for p in parameters if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset:offset + n].view_as(g))
            offset += n

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when `flag` is true on some rank (so all ranks stop on the same step)."""
        if self.world == 1:
            return flag
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def broadcast_int(self, value: int, device: torch.device) -> int:
        """Rank 0's value, on every rank."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.int64, device=device)
        dist.broadcast(t, src=0)
        return int(t.item())

    def union(self, mask: torch.Tensor) -> torch.Tensor:
        """Element-wise OR of a bool tensor over all ranks (the same result on every rank)."""
        if self.world == 1:
            return mask
        import torch.distributed as dist

        t = mask.to(torch.uint8)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.bool()

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def current_ranks() -> Ranks:
    """The ranks of the initialised default process group, or a single process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def init_from_torchrun(device_arg: str) -> tuple[Ranks, str]:
    """Initialise the process group when started by torchrun (WORLD_SIZE > 1).

    Returns the ranks and the device string for this process: cuda:LOCAL_RANK with NCCL when
    CUDA is available (or asked for), else the CPU with Gloo (useful for tests).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks(), device_arg
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_arg != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size()), (f"cuda:{local_rank}" if use_cuda else "cpu")
