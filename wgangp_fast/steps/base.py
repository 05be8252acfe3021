"""What the step classes share: resolving the mode at the first call, autocast, torch.compile,
the fallback of "auto", the optimiser step (through a GradScaler in fp16), and averaging the
gradients of DistributedDataParallel models over their process group."""

from __future__ import annotations

import contextlib
import types
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .. import _validate as V
from .capture import CaptureError, GraphRunner, HeldLearningRates, first_line
from .policy import COMPILED_MODES, GRAPH_MODES, check_mode, is_ddp

__all__ = ["StepBase", "check_batch_norm_batch", "count", "own_code", "side_effect_free",
           "wide"]


def wide(t: Tensor) -> Tensor:
    """float32 for half-precision critic outputs (the means are taken in float32), else t."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def count(name: str, value, minimum: int) -> int:
    value = V.integer(name, value)  # numpy integers too
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return value


def own_code(fn):
    """A copy of `fn` with a code object of its own. Dynamo keeps compiled graphs, and counts
    recompilations against its limit, per code object: without a copy every step instance (and
    every optimiser of one class) would share one cache, and past eight critics the later ones
    would silently run uncompiled."""
    if isinstance(fn, types.MethodType):
        return types.MethodType(own_code(fn.__func__), fn.__self__)
    copy = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__,
                              fn.__defaults__, fn.__closure__)
    copy.__dict__.update(fn.__dict__)
    copy.__kwdefaults__ = fn.__kwdefaults__
    return copy


def _fallback_errors() -> tuple:
    """What makes a mode unable to run a step at its first call: torch.compile cannot trace
    it, or a CUDA graph cannot capture it."""
    from torch._dynamo import exc as dynamo_exc

    return (dynamo_exc.TorchDynamoException, CaptureError)


def check_batch_norm_batch(module: nn.Module, n: int, owner: str, name: str) -> None:
    """BatchNorm in training mode needs two samples per channel; PyTorch's own error ("Expected
    more than 1 value per channel") names neither the model nor the fix."""
    if n >= 2 or not module.training:
        return
    layers = [f"{k or '<root>'} ({type(m).__name__})" for k, m in module.named_modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    if layers:
        raise ValueError(f"{owner}: a batch of {n} sample(s) cannot pass the {name}'s BatchNorm "
                         f"layers in training mode ({', '.join(layers)}), which need at least 2 "
                         f"per batch: use batches of 2 or more, or a {name} without BatchNorm")


@contextlib.contextmanager
def side_effect_free(modules: Sequence[nn.Module], device: torch.device):
    """Forward passes that leave no trace, for probing a model before compiling it: the RNG
    restored afterwards, every module in evaluation mode meanwhile (BatchNorm's running
    statistics untouched), no autograd."""
    flags = [(m, m.training) for module in modules for m in module.modules()]
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        for m, _ in flags:
            m.training = False
        try:
            yield
        finally:
            for m, training in flags:
                m.training = training


class _Averaging:
    """The gradient all-reduce of DistributedDataParallel models. The steps run the inner module
    (DDP's own reducer is armed only by a forward through the wrapper, and DDP allows one such
    forward per backward, fewer than a critic step makes) and average the gradients over the
    wrapper's process group after the backward, as one flat all-reduce per dtype: eager, compiled
    and captured alike (NCCL's all-reduce can be captured in a CUDA graph)."""

    def __init__(self, modules: Sequence[nn.Module]):
        self.groups = []
        for m in modules:
            if is_ddp(m):
                params = [p for p in m.module.parameters() if p.requires_grad]
                self.groups.append((m.process_group, params))

    def __bool__(self) -> bool:
        return bool(self.groups)

    def __call__(self) -> None:
        import torch.distributed as dist

        for group, params in self.groups:
            world = dist.get_world_size(group)
            by_dtype: Dict[torch.dtype, List[Tensor]] = {}
            for p in params:
                if p.grad is not None:
                    by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
            for grads in by_dtype.values():
                flat = torch.cat([g.reshape(-1) for g in grads])
                dist.all_reduce(flat, group=group)
                flat.div_(world)
                offset = 0
                for g in grads:
                    g.copy_(flat[offset:offset + g.numel()].view_as(g))
                    offset += g.numel()


class StepBase:
    """Mode resolution, autocast, compile, the graph runner and the optimiser step of a step."""

    owner = "Step"
    compiles_optimizer_steps = True

    def __init__(self, mode: str, optimizers: Sequence, scaler, autocast, warmup: int,
                 max_graphs: int, compile_options: Optional[dict], simulate_graphs: bool,
                 ddp_modules: Sequence[nn.Module] = ()):
        check_mode(mode)
        if autocast not in (None, torch.float16, torch.bfloat16):
            raise ValueError(f"autocast must be None, torch.bfloat16 or torch.float16, got "
                             f"{autocast!r}")
        for opt in optimizers:
            if not isinstance(opt, torch.optim.Optimizer):
                raise TypeError(f"optimizer must be a torch.optim.Optimizer, got "
                                f"{type(opt).__name__}")
        self.requested_mode = mode
        self.mode: Optional[str] = None  # resolved at the first call, which shows the device
        self.scaler = scaler
        self.autocast = autocast
        self.warmup = count("warmup", warmup, 0)
        self.max_graphs = count("max_graphs", max_graphs, 1)
        self.compile_options = dict(compile_options or {})
        self.simulate_graphs = V.flag("simulate_graphs", simulate_graphs)
        self._optimizers = list(optimizers)
        self._average = _Averaging(ddp_modules)
        self._runner: Optional[GraphRunner] = None
        self._rates: Optional[HeldLearningRates] = None
        self._optimizer_steps: Dict[int, Callable] = {}
        # updates an fp16 GradScaler skipped (inf/NaN gradients): in all, and the latest run
        self.skipped_steps = 0
        self.skipped_in_a_row = 0

    def _choose(self, device: torch.device) -> Tuple[str, Optional[str]]:
        raise NotImplementedError

    def check(self, device) -> Optional[str]:
        """Whether this step's mode can run on `device`, decided as at the first call but with
        no effect: an explicit mode that cannot run raises ValueError; the return value is the
        reason "auto" would run eager instead (None when it would not)."""
        return self._choose(torch.device(device))[1]

    def resolve(self, device: torch.device) -> str:
        """The mode this step runs in on `device`, decided once (at the first call, or earlier
        by a caller who wants a refusal before any work): an explicit mode that cannot run
        raises ValueError; "auto" warns once where it falls back to eager."""
        if self.mode is None:
            mode, why = self._choose(torch.device(device))
            if why:
                warnings.warn(f"{self.owner}(mode='auto') runs eager: {why}", RuntimeWarning,
                              stacklevel=3)
            self.mode = mode
            if mode in GRAPH_MODES:
                self._runner = GraphRunner(self.owner, self._graph_body, self._optimizers,
                                           warmup=self.warmup, max_graphs=self.max_graphs,
                                           simulate=self.simulate_graphs)
            elif mode == "compile":
                self._rates = HeldLearningRates(self._optimizers,
                                                capturable=torch.device(device).type == "cuda")
            if mode in COMPILED_MODES and not self._scaling and self.compiles_optimizer_steps:
                # the optimiser's elementwise update fused by inductor (about 10% of an MLP
                # critic step on the CPU); its lr is a held tensor, so a schedule does not
                # recompile it
                self._optimizer_steps = {id(opt): self._compile(opt.step, fullgraph=False)
                                         for opt in self._optimizers}
        return self.mode

    def _resolve(self, device: torch.device, probe: Callable[[], None] = None) -> str:
        """The mode, chosen at the first call; `probe` (a check of the models' outputs) runs
        then, once, where that mode is a compiled one: inside a trace a wrong output only shows
        as "could not trace"."""
        fresh = self.mode is None
        mode = self.resolve(device)
        if fresh and probe is not None and mode in COMPILED_MODES:
            probe()
        if self._rates is not None:
            self._rates.sync()
        return mode

    def _graph_body(self, *args):
        raise NotImplementedError

    @property
    def _scaling(self) -> bool:
        return self.scaler is not None and self.scaler.is_enabled()

    def autocast_context(self, device: torch.device, graphed: bool = False):
        if self.autocast is None:
            return contextlib.nullcontext()
        # inside a CUDA graph the autocast cache would keep casts of one capture's tensors
        return torch.autocast(device.type, dtype=self.autocast, cache_enabled=not graphed)

    def _compile(self, fn, **options):
        # static shapes: a step sees one or a few batch shapes, and dropout under torch.func
        # fails with symbolic sizes
        options = {"fullgraph": True, "dynamic": False, **options, **self.compile_options}
        return torch.compile(own_code(fn), **options)

    def _fall_back(self, exc: Exception) -> None:
        """The mode cannot run this step (found at its first call): raise under an explicit
        mode, else warn once and go eager."""
        why = str(exc) if isinstance(exc, CaptureError) else \
            f"torch.compile could not trace the step in one graph ({first_line(exc)})"
        if self.requested_mode != "auto":
            raise RuntimeError(f"{self.owner}(mode={self.mode!r}): {why}. Use mode='eager' "
                               f"(or 'auto', which falls back)") from exc
        warnings.warn(f"{self.owner}(mode='auto') runs eager: {why}", RuntimeWarning,
                      stacklevel=4)
        self.mode = "eager"
        self._runner = None
        self._optimizer_steps = {}

    def _execute(self, graphed: Callable[[], tuple], run: Callable[[str], tuple]) -> tuple:
        """One call in the resolved mode: `graphed()` in the graph modes, else `run(mode)`;
        eager when the mode turns out unable to run the step."""
        try:
            return graphed() if self.mode in GRAPH_MODES else run(self.mode)
        except _fallback_errors() as exc:
            self._fall_back(exc)
            return run("eager")

    def _step_optimizer(self, optimizer) -> bool:
        """Average DDP gradients, then optimizer.step() (through the GradScaler in fp16); True
        when the scaler skipped the update (its gradients were not finite)."""
        if self._average:
            self._average()
        if not self._scaling:
            self._optimizer_steps.get(id(optimizer), optimizer.step)()
            return False
        before = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        # update() lowers the scale exactly when this step found inf/NaN gradients (under DDP
        # after the all-reduce, so every rank skips together)
        skipped = self.scaler.get_scale() < before
        self.skipped_steps += skipped
        self.skipped_in_a_row = self.skipped_in_a_row + 1 if skipped else 0
        return skipped

    @property
    def captures(self) -> int:
        """CUDA graphs captured so far (graph modes)."""
        return self._runner.captures if self._runner is not None else 0
