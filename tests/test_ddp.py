"""DistributedDataParallel on the CPU: 2 processes, gloo, the same training code as one process."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.test_train import TINY, tiny_digits

WORLD = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, port: int, out_dir: str) -> None:
    """One rank: join the gloo group, train, write what it saw as JSON."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from zeal_core import distributed
    from zeal_core.train import train_model

    assert distributed.init_from_env(backend="gloo")
    try:
        # 64 training images: 4 steps of 8 per rank and epoch.
        result = train_model(tiny_digits(), replace(TINY, epochs=3), device="cpu")
        digest = hashlib.sha256()
        for tensor in result.model.state_dict().values():
            digest.update(tensor.detach().contiguous().numpy().tobytes())
        text = distributed.broadcast_text(f"hello from {distributed.rank()}")
        record = {"losses": [entry["train_loss"] for entry in result.history],
                  "steps": result.metrics["steps"],
                  "world_size": result.metrics["world_size"], "val_accuracy": result.metrics["val_accuracy"],
                  "num_classes": result.model_config.num_classes, "weights": digest.hexdigest(),
                  "broadcast": text}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(record))
    finally:
        dist.barrier()
        distributed.cleanup()


@pytest.mark.slow
def test_two_gloo_processes_train_in_step(tmp_path: Path) -> None:
    mp.start_processes(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True,
                       start_method="spawn")
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(WORLD)]
    for record in ranks:
        assert record["world_size"] == WORLD and record["num_classes"] == 10
        assert record["steps"] == TINY.epochs * 64 // (8 * WORLD)  # each rank takes half of every epoch
        assert record["losses"][-1] < record["losses"][0]
        assert 0.0 <= record["val_accuracy"] <= 1.0
        assert record["broadcast"] == "hello from 0"
    # The replicas stay identical (buffers averaged each epoch) and the logged losses are averaged.
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert ranks[0]["losses"] == ranks[1]["losses"]
