"""Data-parallel runs under `torchrun` (torch.distributed): set-up from the launcher's environment.

`torchrun --nproc_per_node N …` starts N processes with RANK, LOCAL_RANK and WORLD_SIZE set; `init()`
joins them into one process group — NCCL on CUDA devices (each rank on GPU LOCAL_RANK), gloo on the
CPU (what the tests use) — and `sae.train.train_family` then shards every batch by rank. A plain
`python` process (no WORLD_SIZE, or WORLD_SIZE=1) is left alone: one rank, no process group.
"""

from __future__ import annotations

import os
import sys

import torch

_JOINED = False  # this process joined a process group (init), so its exit goes through `exit`


def init(device: str = "cpu") -> tuple[int, int, str]:
    """(rank, world size, this rank's device), initialising the process group once if torchrun started us."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} asked for under torchrun, but CUDA is not available")
        device = f"cuda:{local}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    global _JOINED
    _JOINED = True
    return dist.get_rank(), dist.get_world_size(), device


def world() -> tuple[int, int]:
    """(rank, world size): (0, 1) outside an initialised process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    import torch.distributed as dist

    if world()[1] > 1:
        dist.barrier()


def rank0_first(fn):
    """`fn()` on rank 0, then — after a barrier — on the other ranks: for a step that publishes to the shared
    cache (token rows, held-out activations), which the other ranks then read instead of recomputing."""
    rank, size = world()
    if size == 1:
        return fn()
    if rank == 0:
        out = fn()
        barrier()
        return out
    barrier()
    return fn()


def close() -> None:
    """Leave the process group once every rank is done."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # no rank tears the group down while another still talks to it (gloo aborts then)
        dist.destroy_process_group()


def exit(code: int = 0):
    """End a torchrun rank's process: leave the group (`close`), flush, and `os._exit(code)` without the
    interpreter's teardown, in which gloo's transport threads are sometimes destroyed still joinable
    ("terminate called without an active exception", SIGABRT: seen in this project's gloo tests
    now and then, after every result was written). A process that joined no group exits normally (`SystemExit`)."""
    close()
    if _JOINED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)
