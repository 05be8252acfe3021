"""The CUDA-graph machinery of the graph modes: one capture per input signature, static inputs
and gradients, learning rates held in device tensors, and the CPU simulation that tests use.

A captured step replays its kernels with no host work: every tensor it reads or writes must stay
the same object across replays. So the inputs are copied into static buffers, the optimisers'
gradients are static tensors zeroed inside the graph, and a float learning rate (which a graph
would bake in) lives in a device tensor that an lr schedule writes before each replay.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = ["CaptureError", "GraphRunner", "HeldLearningRates", "first_line", "zero_static_grads"]


class CaptureError(RuntimeError):
    """A step could not be captured in a CUDA graph (it synchronises with the host)."""


def first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def zero_static_grads(optimizer) -> None:
    """The graph modes' zero_grad: the gradients stay the same tensors (one foreach kernel)."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"]
             if p.grad is not None]
    if grads:
        torch._foreach_zero_(grads)


def _hyper_value(v):
    # tensors by identity: comparing them by value would synchronise with the device
    return ("tensor", id(v)) if isinstance(v, Tensor) else v


class HeldLearningRates:
    """Learning rates held in device tensors, so that a compiled or captured optimiser step reads
    the current value: a float lr would be a constant of the graph (a CUDA graph replays it; a
    compiled step recompiles for each new value). The optimisers that support a tensor lr are
    those with a `capturable` option; on CUDA they are switched to capturable=True (their step
    counters move to the device), as a tensor lr there requires. Before each step `sync` copies
    a float (or another tensor) the user or an lr scheduler assigned into the held tensor, and
    says whether any other hyperparameter changed."""

    def __init__(self, optimizers: Sequence, *, capturable: bool):
        self.optimizers = list(optimizers)
        self.held: Dict[Tuple[int, int], Tensor] = {}
        for opt in self.optimizers:
            if "capturable" not in opt.defaults:
                continue
            for i, group in enumerate(opt.param_groups):
                if capturable:
                    group["capturable"] = True
                    for q in group["params"]:
                        state = opt.state.get(q, {})
                        step = state.get("step")
                        if isinstance(step, Tensor) and step.device != q.device:
                            state["step"] = step.to(q.device, torch.float32)
                elif group.get("foreach") and not group.get("capturable"):
                    continue  # foreach without capturable refuses a tensor lr
                # a tensor lr already there (from a checkpoint, say) is copied too: the held
                # tensor is the one the graphs read, whatever is assigned to group["lr"] later
                lr = group["lr"]
                held = torch.empty((), dtype=torch.float64, device=group["params"][0].device)
                if isinstance(lr, Tensor):
                    held.copy_(lr)
                else:
                    held.fill_(float(lr))
                self.held[(id(opt), i)] = group["lr"] = held
        self._seen = self._snapshot()

    def _snapshot(self) -> list:
        return [{k: _hyper_value(v) for k, v in group.items() if k != "params"}
                for opt in self.optimizers for group in opt.param_groups]

    def sync(self) -> bool:
        """Move assigned learning rates into the held tensors; True when another
        hyperparameter (or an unheld lr) changed since the last call."""
        for opt in self.optimizers:
            for i, group in enumerate(opt.param_groups):
                held = self.held.get((id(opt), i))
                if held is not None and group["lr"] is not held:
                    if isinstance(group["lr"], Tensor):
                        held.copy_(group["lr"])
                    else:
                        held.fill_(float(group["lr"]))
                    group["lr"] = held
        now = self._snapshot()
        changed, self._seen = now != self._seen, now
        return changed


class _Captured:
    """One captured step: static inputs, the graph, its outputs."""

    def __init__(self, inputs: List[Tensor]):
        self.inputs = inputs
        self.outputs: Tuple = ()
        self.graph = None
        self.fn: Optional[Callable[[], Tuple]] = None

    def replay(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:  # simulated: re-run the captured function
            self.outputs = self.fn()


class GraphRunner:
    """Runs `body(*tensors, flags)` captured in a CUDA graph, one capture per input signature.

    The first `warmup` calls of each signature run eagerly (on a side stream on CUDA: cuBLAS
    handles, autograd's device threads and the optimiser state exist before a capture); the next
    captures and replays. Every call is a real step. The optimisers' gradients are static
    tensors the body zeroes and accumulates into, so `p.grad` is the same tensor in every graph;
    a float lr of a capturable optimiser moves into a device tensor the replays read (an lr
    schedule needs no re-capture); any other hyperparameter change drops the captures.

    With `simulate`, all of this bookkeeping runs on any device but nothing is captured: a
    "replay" re-runs the body on the static buffers. It tests code that uses the graph modes on
    a machine without a GPU; only the capture itself is left to a GPU run."""

    def __init__(self, owner: str, body: Callable, optimizers: Sequence, *, warmup: int,
                 max_graphs: int, simulate: bool = False):
        self.owner = owner
        self.simulate = simulate
        self.body = body
        self.optimizers = list(optimizers)
        self.warmup = warmup
        self.max_graphs = max_graphs
        self.graphs: Dict[tuple, _Captured] = {}
        self.warm: Dict[tuple, int] = {}
        self.captures = 0
        self._grads: List[Tuple[Tensor, Tensor]] = []
        self._rates: Optional[HeldLearningRates] = None

    def _prepare(self) -> None:
        """Static gradients, and learning rates in device tensors (capturable optimisers)."""
        for opt in self.optimizers:
            for group in opt.param_groups:
                for p in group["params"]:
                    if p.requires_grad:
                        if p.grad is None:
                            p.grad = torch.zeros_like(p)
                        self._grads.append((p, p.grad))
        self._rates = HeldLearningRates(self.optimizers, capturable=not self.simulate)

    def _sync(self) -> None:
        """Before a call: the static gradients back on the parameters (a set_to_none zero_grad
        outside removes them), the learning rates into their tensors, and the captures dropped
        when another hyperparameter changed."""
        for p, g in self._grads:
            if p.grad is not g:
                p.grad = g
        if self._rates.sync():
            self.graphs.clear()

    def __call__(self, key_extra, tensors: Sequence[Tensor], flags) -> Tuple:
        if self._rates is None:
            self._prepare()
        self._sync()
        key = (key_extra,) + tuple((tuple(t.shape), t.dtype, t.device) for t in tensors)
        entry = self.graphs.get(key)
        if entry is None:
            if self.warm.get(key, 0) < self.warmup:
                self.warm[key] = self.warm.get(key, 0) + 1
                return self._eager(tensors, flags)
            if len(self.graphs) >= self.max_graphs:
                shown = "; ".join(str([list(s) for s, _, _ in k[1:]]) for k in self.graphs)
                raise ValueError(
                    f"{self.owner}: a new input signature {[list(t.shape) for t in tensors]} "
                    f"after {self.max_graphs} captured ones ({shown}); each needs a CUDA graph of "
                    f"its own. Feed fixed-size batches (DataLoader(drop_last=True)), raise "
                    f"max_graphs, or use mode='compile' or 'eager'")
            entry = self._capture(tensors, flags)
            self.graphs[key] = entry
            self.captures += 1
        for static, t in zip(entry.inputs, tensors):
            if static is not t:
                static.copy_(t)
        entry.replay()
        return entry.outputs

    def _eager(self, tensors, flags) -> Tuple:
        if self.simulate:
            return self.body(*tensors, flags)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            out = self.body(*tensors, flags)
        torch.cuda.current_stream().wait_stream(side)
        return out

    def _capture(self, tensors, flags) -> _Captured:
        entry = _Captured([t.detach().clone() for t in tensors])
        if self.simulate:
            entry.fn = lambda: self.body(*entry.inputs, flags)
            return entry
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                entry.outputs = self.body(*entry.inputs, flags)
        except RuntimeError as exc:
            for p, g in self._grads:
                p.grad = g
            if "captur" in str(exc).lower():
                raise CaptureError(
                    f"the step could not be captured in a CUDA graph: something in it "
                    f"synchronises with the host (a .item(), data-dependent Python control flow, "
                    f"a CPU tensor) ({first_line(exc)})") from exc
            raise
        entry.graph = graph
        return entry


