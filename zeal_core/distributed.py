"""Scale-out helpers: the same training code on 1 process, N GPUs, or N nodes through ``torchrun``.

``torchrun --nproc_per_node 2 -m zeal_core train --dataset digits`` starts two processes; each one calls
``init_from_env()`` (the ``train`` command does), which joins the process group (NCCL on CUDA, gloo on the
CPU). ``zeal_core.train.train_model`` then sees an initialised group, wraps the model in
DistributedDataParallel and gives each rank its own share of every epoch's shuffled indices. Rank 0 alone
reports progress and registers the model.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

from zeal_core.errors import ConfigError


def is_distributed() -> bool:
    """True inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """How many processes train together (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on the process that reports progress, writes files and prints results."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    """True when ``torchrun`` (or another launcher) set ``WORLD_SIZE`` > 1 for this process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(backend: str | None = None, timeout_s: float = 600.0) -> bool:
    """Join the process group described by torchrun's environment; do nothing for a single process.

    Args:
        backend: ``"gloo"`` or ``"nccl"``; default NCCL when a GPU is visible, gloo otherwise.
        timeout_s: Seconds a collective may wait for the other ranks.

    Returns:
        True when this process is now part of a group of more than one.

    Raises:
        ConfigError: The environment names a world size but not this process's rank or the rendezvous.
    """
    if not launched_by_torchrun():
        return False
    if dist.is_initialized():
        return True
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE is set but {missing} are not: start the processes with torchrun")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return True


def local_rank() -> int:
    """This process's index on its node (picks its GPU)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def default_device_name() -> str:
    """``cuda:<local rank>`` when distributed on GPUs, else ``auto``."""
    if is_distributed() and torch.cuda.is_available():
        return f"cuda:{local_rank()}"
    return "auto"


def shard(indices: torch.Tensor, steps_per_rank: int, batch_size: int) -> torch.Tensor:
    """This rank's share of one epoch's shuffled indices (DistributedSampler-style, equal per rank).

    Every rank shuffles with the same seed, so they hold the same ``indices``; rank r takes every
    ``world_size``-th element starting at r, cut to ``steps_per_rank * batch_size`` so all ranks run the
    same number of steps (the collectives would hang otherwise).
    """
    mine = indices[rank()::world_size()]
    return mine[: steps_per_rank * batch_size]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks (in place; a no-op for one process)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is True on any rank (all ranks must call this together)."""
    if not is_distributed():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def cleanup() -> None:
    """Leave the process group (safe to call when there is none)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_text(text: str, source: int = 0) -> str:
    """Send rank ``source``'s ``text`` to every rank (as UTF-8 bytes in a tensor; nothing is pickled)."""
    if not is_distributed():
        return text
    device = torch.device(f"cuda:{local_rank()}") if dist.get_backend() == "nccl" else torch.device("cpu")
    data = torch.tensor(list(text.encode()) if rank() == source else [], dtype=torch.uint8)
    length = torch.tensor([data.numel()], dtype=torch.int64, device=device)
    dist.broadcast(length, src=source)
    buffer = data.to(device) if rank() == source else torch.empty(int(length.item()), dtype=torch.uint8,
                                                                    device=device)
    dist.broadcast(buffer, src=source)
    return bytes(buffer.cpu().tolist()).decode()


def average_buffers(model: torch.nn.Module) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over ranks, so replicas agree.

    DDP keeps parameters identical but each rank's last forward pass updates its own running statistics.
    """
    if not is_distributed():
        return
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
            buffer.div_(world_size())
