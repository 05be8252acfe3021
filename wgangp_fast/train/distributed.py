"""Data-parallel training across processes: `torchrun --nproc_per_node N -m wgangp_fast train`.

The trainer calls `setup` once; it reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT), joins the process group (nccl for CUDA devices, gloo for the CPU) and
picks the device of the rank (cuda:LOCAL_RANK). Without those variables it does nothing and the run
is an ordinary single process.

How the gradient penalty meets DistributedDataParallel (DDP): both models are wrapped (the
wrapper broadcasts rank 0's weights at construction and carries the process group), and the
step classes (wgangp_fast.steps) run the inner modules and average the gradients over the group
before each update, one flat all-reduce per step, in every step mode. DDP's own reducer fires
only after a forward through the wrapper, and allows one such forward per backward, where a
critic step makes three (real, fake, the interpolates) and differentiates one of them twice; the
penalty's input gradient (`torch.autograd.grad(create_graph=True)`, or torch.func.grad compiled)
stays process-local, and the averaged gradient covers the penalty's part too. The averaging
happens after every backward of the step, so CTGAN's two backward calls work here as well.
Buffers (BatchNorm's running statistics of the generator) stay per rank; rank 0's are saved.

Each rank draws its own real batches (the sampler's seed includes the rank) and its own noise (the
global RNGs are re-seeded per rank after the models are built); `batch_size` is per process, so a
pac group never straddles two ranks. Only rank 0 writes files; a checkpoint holds every rank's RNG
and sampler state, and a resumed run with a different world size re-derives them with
`derive_seed(seed, rank, step)`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Tuple

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["DistInfo", "all_reduce_mean", "barrier", "cleanup", "derive_seed", "gather_objects",
           "setup", "world_size_from_env", "wrap"]

_REQUIRED_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
# True when this module created the process group (and so may destroy it)
_OWNS_GROUP = False


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {text!r}") from None


def world_size_from_env() -> int:
    """WORLD_SIZE as torchrun sets it (1 when unset)."""
    return _env_int("WORLD_SIZE", 1)


def _initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _device_for(requested: str, local_rank: int) -> torch.device:
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except RuntimeError as exc:
        raise ValueError(f"device {requested!r} is not a valid torch device ({exc})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {requested!r} was asked for but CUDA is not available "
                             f"here; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def setup(device: str = "auto") -> Tuple[DistInfo, torch.device | None]:
    """Join the process group that torchrun describes in the environment.

    Returns (DistInfo, the rank's device), or (DistInfo(), None) for a single process (the caller
    then resolves `device` itself). An existing process group is used as it is.
    """
    if not _initialized() and world_size_from_env() <= 1:
        return DistInfo(), None
    if not torch.distributed.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    local_rank = _env_int("LOCAL_RANK", 0)
    dev = _device_for(device, local_rank)
    if not _initialized():
        missing = [k for k in _REQUIRED_ENV if not os.environ.get(k)]
        if missing:
            raise ValueError(f"WORLD_SIZE > 1 but {', '.join(missing)} not set: launch with "
                             f"torchrun --nproc_per_node N -m wgangp_fast train ...")
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        global _OWNS_GROUP
        torch.distributed.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        _OWNS_GROUP = True
    elif dev.type == "cuda":
        torch.cuda.set_device(dev)
    info = DistInfo(rank=torch.distributed.get_rank(),
                    world_size=torch.distributed.get_world_size(), local_rank=local_rank)
    return info, dev


def cleanup() -> None:
    """Leave the process group if `setup` created it."""
    global _OWNS_GROUP
    if _OWNS_GROUP and _initialized():
        torch.distributed.destroy_process_group()
    _OWNS_GROUP = False


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """`module` in DistributedDataParallel, for the step classes to average its gradients over
    the process group (the module itself when not distributed)."""
    if not _initialized() or torch.distributed.get_world_size() <= 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, output_device=ids[0] if ids else None)


def all_reduce_mean(t: Tensor) -> Tensor:
    """The mean of `t` over the ranks (a new tensor; `t` itself when not distributed). NaN or inf
    on any rank reaches every rank, so all of them stop together on a non-finite loss."""
    if not _initialized() or torch.distributed.get_world_size() <= 1:
        return t
    out = t.detach().clone()
    torch.distributed.all_reduce(out)
    return out / torch.distributed.get_world_size()


def gather_objects(obj: Any) -> List[Any]:
    """Every rank's `obj`, in rank order, on every rank ([obj] when not distributed)."""
    if not _initialized() or torch.distributed.get_world_size() <= 1:
        return [obj]
    out: List[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if _initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.barrier()


def derive_seed(seed: int, rank: int, step: int = 0) -> int:
    """A 63-bit seed that depends on (seed, rank, step) and nothing else: the rank's random
    streams when none were saved for it (a fresh run, or a resume with another world size)."""
    words = np.random.SeedSequence([int(seed), int(rank), int(step), 0x5EED]).generate_state(2)
    return int((int(words[0]) << 31) ^ int(words[1])) & ((1 << 63) - 1)
