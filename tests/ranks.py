"""Spawning gloo ranks on this machine for the distributed tests (tests/steps/test_ddp.py,
tests/train/test_distributed.py)."""

from __future__ import annotations

import os
import time
from typing import Callable, List

import pytest
import torch
import torch.distributed
import torch.multiprocessing as mp

# gloo connects the ranks through the address the host name resolves to; on a machine without a
# network that may lead nowhere. Loopback always works for ranks on one machine.
LOOPBACK = {"GLOO_SOCKET_IFNAME": "lo"} if os.path.exists("/sys/class/net/lo") else {}


def init_group(rank: int, world: int, folder: str) -> None:
    """Join a gloo group through a file in `folder`, not a TCP port picked in advance: another
    process can take such a port before rank 0 binds it, and rank 1 then waits on a stranger's
    store (a suite run with 4 workers on the GPU machine once stalled here)."""
    os.environ.update(LOOPBACK)
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/rendezvous",
                                         rank=rank, world_size=world)


def spawn(worker: Callable, world: int, folder: str, timeout_s: float) -> List[object]:
    """Run worker(rank, folder) on `world` processes and load what each saved as
    folder/rank<r>.pt. Joined with a deadline: a rank stuck in the rendezvous (gloo waits 30
    minutes by default) fails the test instead of hanging the suite."""
    ctx = mp.spawn(worker, args=(folder,), nprocs=world, join=False)
    deadline = time.monotonic() + timeout_s
    while not ctx.join(timeout=1.0):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"the {world} ranks did not finish within {timeout_s} s")
    return [torch.load(os.path.join(folder, f"rank{r}.pt")) for r in range(world)]
