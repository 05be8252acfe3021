"""Which mode a step runs in, and why a mode cannot run: the one place that decides it.

Every refusal is decided here, for the step classes and for the trainer (which builds its
iterations from them): an explicit mode that cannot run raises ValueError naming the cause and
what to use instead; "auto" takes its preferred mode where it can run and "eager" with the reason
where it cannot.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn

__all__ = ["COMPILED_MODES", "GRAPH_MODES", "MODES", "capture_problem", "check_mode",
           "choose_mode", "is_ddp", "mutating_layers", "unwrap"]

MODES = ("auto", "eager", "compile", "graph", "compile+graph")
GRAPH_MODES = ("graph", "compile+graph")
COMPILED_MODES = ("compile", "compile+graph")


def check_mode(mode) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")


def is_ddp(module) -> bool:
    from torch.nn.parallel import DistributedDataParallel

    return isinstance(module, DistributedDataParallel)


def unwrap(module: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (the module itself otherwise)."""
    return module.module if is_ddp(module) else module


def mutating_layers(module: nn.Module) -> List[str]:
    """The layers that couple the samples of a batch or write to buffers in their forward
    (BatchNorm, InstanceNorm with running statistics, spectral norm's power iteration). A
    functional trace or a graph capture of the critic's double backward would not keep their
    buffer writes, and batch coupling breaks the per-sample meaning of the penalty."""
    found = []
    for name, m in unwrap(module).named_modules():
        label = f"{name or '<root>'} ({type(m).__name__})"
        if isinstance(m, nn.modules.batchnorm._BatchNorm) or (
                isinstance(m, nn.modules.instancenorm._InstanceNorm) and m.track_running_stats):
            found.append(label)
        elif hasattr(m, "parametrizations"):
            kinds = {type(q).__name__ for qs in m.parametrizations.values() for q in qs}
            if any("SpectralNorm" in k for k in kinds):
                found.append(label + " with spectral norm")
        elif hasattr(m, "weight_orig") and hasattr(m, "weight_u"):
            found.append(label + " with spectral norm")
    return found


def capture_problem(optimizer) -> Optional[str]:
    """Why this optimiser's step cannot run inside a CUDA graph (None when it can)."""
    if "capturable" in optimizer.defaults or type(optimizer) is torch.optim.SGD:
        return None
    return (f"{type(optimizer).__name__} keeps host-side state in its step; graph modes need "
            f"an optimiser with a capturable step (torch.optim.Adam, AdamW, RMSprop, ..., SGD)")


def choose_mode(mode: str, device: torch.device, critic: nn.Module, *, optimizers=(),
                scaler=None, check_critic: bool = True, simulate_graphs: bool = False
                ) -> Tuple[str, Optional[str]]:
    """(the mode to run, the reason the preferred mode cannot run, or None).

    `critic` is checked for buffer-mutating layers (with check_critic), `optimizers` for a
    capturable step, `scaler` for a host synchronisation. An explicit mode that cannot run
    raises ValueError with the reason; "auto" returns "eager" and the reason its
    preferred mode was not taken (the caller warns once). `simulate_graphs`: the graph modes run
    their bookkeeping on any device without capturing (see GraphRunner)."""
    check_mode(mode)
    if mode == "eager":
        return "eager", None
    graphs_here = device.type == "cuda" or simulate_graphs
    if mode == "auto":
        if not graphs_here:
            # CPU: the compiled steps measured slower than eager ones (README, "Whole steps")
            return "eager", None
        preferred = "graph"
    else:
        preferred = mode
    problems = []
    layers = mutating_layers(critic) if check_critic else []
    if layers:
        problems.append(f"the critic has batch-coupling or buffer-mutating layers: "
                        f"{', '.join(layers)}")
    if preferred in GRAPH_MODES:
        if not graphs_here:
            problems.append(f"CUDA graphs need CUDA tensors, got {device.type} tensors")
        if scaler is not None and scaler.is_enabled():
            problems.append("a GradScaler synchronises with the host in its step (bf16 autocast "
                            "needs no scaler)")
        for opt in optimizers:
            why = capture_problem(opt)
            if why:
                problems.append(why)
    if not problems:
        return preferred, None
    why = f"mode {preferred!r} cannot run: " + "; ".join(problems)
    if mode == "auto":
        return "eager", why
    cpu_hint = preferred in GRAPH_MODES and not graphs_here
    raise ValueError(why + ". Use mode='eager'" + (" or 'compile'" if cpu_hint else ""))
