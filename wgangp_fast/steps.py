"""Whole training steps in one call: `CriticStep`, `GeneratorStep` and `TrainStep`.

    step = wgangp_fast.CriticStep(critic, optimizer, lambda_gp=10.0, mode="auto")
    stats = step(real, fake)        # zero_grad, critic on real and fake, penalty, backward, step
    stats.loss, stats.wasserstein, stats.penalty

A critic step of WGAN-GP is some 250 eager ops: the critic's forward on real, fake and the
interpolates, its create_graph input gradient and the double backward through it, then the
optimiser. The fused penalty ops cannot touch most of them; these classes run the whole step in
one of five modes:

- "eager": the drop-in path (`gradient_penalty` in the seed codes' loop). The RNG is consumed as
  the seed codes consume it: dropout masks of D(real), then of D(fake), then alpha, then the masks
  of D(x_hat).
- "compile": the torch.func formulation under torch.compile. The input gradient is
  `torch.func.grad` of the critic's summed output at x_hat, the parameter gradients
  `torch.func.grad_and_value` of the whole loss over the parameters, so the double backward is an
  ordinary traced graph (AOTAutograd refuses double backward through `autograd.grad`). One
  compiled graph computes the loss and every gradient; the optimiser step runs after it. Random
  draws (alpha, dropout masks) come from inductor's generator, with values of their own; with
  `torch._inductor.config.fallback_random = True` they are eager's, in eager's order.
- "graph": the eager step captured once per input signature with `torch.cuda.graph` and replayed
  on static input buffers (CUDA only). alpha and the dropout masks are drawn inside the graph from
  the CUDA generator's graph-safe Philox stream: each replay draws fresh values. The optimiser is
  switched to `capturable=True` and a float lr is kept in a device tensor, so an lr schedule
  reaches the replays; any other hyperparameter change re-captures.
- "compile+graph": the compiled step of "compile", captured like "graph".
- "auto": "graph" on CUDA tensors and "eager" on the CPU, where the compiled steps measured
  slower (inductor's CPU code stores the activation masks of the double backward through a slow
  generic path); and "eager" wherever "graph" cannot serve, with a one-time warning saying why.

Refusals (an explicit mode raises ValueError; "auto" falls back to eager with a warning):
buffer-mutating layers in the critic (BatchNorm, spectral norm: they also break the per-sample
meaning of the penalty), a DistributedDataParallel critic, graph modes on the CPU, with a
GradScaler, or with an optimiser whose step cannot be captured, and more input signatures than
`max_graphs` in a graph mode. A critic torch.compile cannot trace in one graph (data-dependent
Python control flow) or a step that synchronises with the host inside a capture raises at the
first call with the reason (or falls back under "auto").
"""

from __future__ import annotations

import contextlib
import types
import warnings
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, grad_and_value

from . import _validate as V
from .ops import gradient_norm_penalty
from .penalty import KINDS, _first, input_gradients, kind_settings, penalty_points

__all__ = ["MODES", "CaptureError", "CriticStep", "GeneratorStep", "StepStats", "TrainStats",
           "TrainStep", "choose_mode"]

MODES = ("auto", "eager", "compile", "graph", "compile+graph")
GRAPH_MODES = ("graph", "compile+graph")
# torch.compile options of every step, under the caller's compile_options (tests set a cheaper
# backend here)
DEFAULT_COMPILE_OPTIONS: dict = {}
# Test hook: run the graph modes' bookkeeping (static buffers, warm-up, one capture per input
# signature, re-capture on hyperparameter changes) on the CPU, a "replay" re-running the captured
# function. It exercises everything but the CUDA capture itself, which `make gpu-check` tests.
_SIMULATE_GRAPHS = False


class StepStats(NamedTuple):
    """What a critic step returns (detached): the loss it minimised, the Wasserstein estimate
    E[D(real)] - E[D(fake)], the penalty (None on a step without it, under gp_every), the
    per-group gradient norms (with return_norms), and whether an fp16 GradScaler skipped the
    update (its gradients were not finite)."""

    loss: Tensor
    wasserstein: Tensor
    penalty: Optional[Tensor]
    norms: Optional[Tensor] = None
    skipped: bool = False


class TrainStats(NamedTuple):
    """What a training iteration returns: the last critic step's StepStats (its penalty and
    norms those of the iteration's last step that carried the penalty) and the generator loss
    -E[D(G(z))]."""

    critic: StepStats
    loss_g: Tensor


def _wide(t: Tensor) -> Tensor:
    """float32 for half-precision critic outputs (the means are taken in float32), else t."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _is_ddp(module) -> bool:
    from torch.nn.parallel import DistributedDataParallel

    return isinstance(module, DistributedDataParallel)


# ---------------------------------------------------------------------------------------------
# What a mode needs
# ---------------------------------------------------------------------------------------------


def _count(name: str, value, minimum: int) -> int:
    value = V.integer(name, value)  # numpy integers too
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return value


def mutating_layers(module: nn.Module) -> List[str]:
    """The layers that couple the samples of a batch or write to buffers in their forward
    (BatchNorm, InstanceNorm with running statistics, spectral norm's power iteration). A
    functional trace or a graph capture of the critic's double backward would not keep their
    buffer writes, and batch coupling breaks the per-sample meaning of the penalty."""
    found = []
    for name, m in module.named_modules():
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


def _capture_problem(optimizer) -> Optional[str]:
    """Why this optimiser's step cannot run inside a CUDA graph (None when it can)."""
    if "capturable" in optimizer.defaults or type(optimizer) is torch.optim.SGD:
        return None
    return (f"{type(optimizer).__name__} keeps host-side state in its step; graph modes need "
            f"an optimiser with a capturable step (torch.optim.Adam, AdamW, RMSprop, ..., SGD)")


def _check_mode(mode) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")


def choose_mode(mode: str, device: torch.device, critic: nn.Module, *, modules=(),
                optimizers=(), scaler=None, check_critic: bool = True
                ) -> Tuple[str, Optional[str]]:
    """(the mode to run, the reason the preferred mode cannot run, or None).

    `critic` is checked for DistributedDataParallel and buffer-mutating layers (with
    check_critic), `modules` for DDP, `optimizers` for a capturable step. An explicit mode that
    cannot run raises ValueError with the reason; "auto" returns "eager" and the reason its
    preferred mode was not taken (the caller warns once)."""
    _check_mode(mode)
    if mode == "eager":
        return "eager", None
    everything = [critic, *modules]
    if mode == "auto":
        if device.type != "cuda" and not _SIMULATE_GRAPHS:
            # CPU: the compiled steps measured slower than eager ones (README, "Whole steps")
            return "eager", None
        preferred = "graph"
    else:
        preferred = mode
    problems = []
    if any(_is_ddp(m) for m in everything):
        problems.append("a model is wrapped in DistributedDataParallel, whose all-reduce hooks "
                        "need eager autograd")
    layers = mutating_layers(critic) if check_critic else []
    if layers:
        problems.append(f"the critic has batch-coupling or buffer-mutating layers: "
                        f"{', '.join(layers)}")
    if preferred in GRAPH_MODES:
        if device.type != "cuda" and not _SIMULATE_GRAPHS:
            problems.append(f"CUDA graphs need CUDA tensors, got {device.type} tensors")
        if scaler is not None and scaler.is_enabled():
            problems.append("a GradScaler synchronises with the host in its step (bf16 autocast "
                            "needs no scaler)")
        for opt in optimizers:
            why = _capture_problem(opt)
            if why:
                problems.append(why)
    if not problems:
        return preferred, None
    why = f"mode {preferred!r} cannot run: " + "; ".join(problems)
    if mode == "auto":
        return "eager", why
    raise ValueError(why + ". Use mode='eager'" + (" or 'compile'" if preferred in GRAPH_MODES
                                                   and device.type == "cpu" else ""))


# ---------------------------------------------------------------------------------------------
# CUDA-graph capture of a step
# ---------------------------------------------------------------------------------------------


def _zero_static_grads(optimizer) -> None:
    """The graph modes' zero_grad: the gradients stay the same tensors (one foreach kernel)."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"]
             if p.grad is not None]
    if grads:
        torch._foreach_zero_(grads)


def _hyper_value(v):
    # tensors by identity: comparing them by value would synchronise with the device
    return ("tensor", id(v)) if isinstance(v, Tensor) else v


class _HeldLearningRates:
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
        else:  # the CPU simulation (_SIMULATE_GRAPHS)
            self.outputs = self.fn()


class _GraphRunner:
    """Runs `body(*tensors, flags)` captured in a CUDA graph, one capture per input signature.

    The first `warmup` calls of each signature run eagerly (on a side stream on CUDA: cuBLAS
    handles, autograd's device threads and the optimiser state exist before a capture); the next
    captures and replays. Every call is a real step. The optimisers' gradients are static
    tensors the body zeroes and accumulates into, so `p.grad` is the same tensor in every graph;
    a float lr of a capturable optimiser moves into a device tensor the replays read (an lr
    schedule needs no re-capture); any other hyperparameter change drops the captures."""

    def __init__(self, owner: str, body: Callable, optimizers: Sequence, *, warmup: int,
                 max_graphs: int):
        self.owner = owner
        self.body = body
        self.optimizers = list(optimizers)
        self.warmup = warmup
        self.max_graphs = max_graphs
        self.graphs: Dict[tuple, _Captured] = {}
        self.warm: Dict[tuple, int] = {}
        self.captures = 0
        self._grads: List[Tuple[Tensor, Tensor]] = []
        self._rates: Optional[_HeldLearningRates] = None

    def _prepare(self) -> None:
        """Static gradients, and learning rates in device tensors (capturable optimisers)."""
        for opt in self.optimizers:
            for group in opt.param_groups:
                for p in group["params"]:
                    if p.requires_grad:
                        if p.grad is None:
                            p.grad = torch.zeros_like(p)
                        self._grads.append((p, p.grad))
        self._rates = _HeldLearningRates(self.optimizers, capturable=not _SIMULATE_GRAPHS)

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
        if _SIMULATE_GRAPHS:
            return self.body(*tensors, flags)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            out = self.body(*tensors, flags)
        torch.cuda.current_stream().wait_stream(side)
        return out

    def _capture(self, tensors, flags) -> _Captured:
        entry = _Captured([t.detach().clone() for t in tensors])
        if _SIMULATE_GRAPHS:
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
                    f"a CPU tensor) ({_first_line(exc)})") from exc
            raise
        entry.graph = graph
        return entry


# ---------------------------------------------------------------------------------------------
# The steps
# ---------------------------------------------------------------------------------------------


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _own_code(fn):
    """A copy of `fn` with a code object of its own. Dynamo keeps compiled graphs, and counts
    recompilations against its limit, per code object: without a copy every step instance (and
    every optimiser of one class) would share one cache, and past eight critics the later ones
    would silently run uncompiled."""
    if isinstance(fn, types.MethodType):
        return types.MethodType(_own_code(fn.__func__), fn.__self__)
    copy = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__,
                              fn.__defaults__, fn.__closure__)
    copy.__dict__.update(fn.__dict__)
    copy.__kwdefaults__ = fn.__kwdefaults__
    return copy


class CaptureError(RuntimeError):
    """A step could not be captured in a CUDA graph (it synchronises with the host)."""


def _fallback_errors() -> tuple:
    """What makes a mode unable to run a step at its first call: torch.compile cannot trace
    it, or a CUDA graph cannot capture it."""
    from torch._dynamo import exc as dynamo_exc

    return (dynamo_exc.TorchDynamoException, CaptureError)


class _Step:
    """What the steps share: mode resolution, autocast, compile, the graph runner."""

    owner = "Step"

    def __init__(self, mode: str, optimizers: Sequence, scaler, autocast, warmup: int,
                 max_graphs: int, compile_options: Optional[dict]):
        _check_mode(mode)
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
        self.warmup = _count("warmup", warmup, 0)
        self.max_graphs = _count("max_graphs", max_graphs, 1)
        self.compile_options = dict(compile_options or {})
        self._optimizers = list(optimizers)
        self._runner: Optional[_GraphRunner] = None
        self._rates: Optional[_HeldLearningRates] = None
        self._optimizer_steps: Dict[int, Callable] = {}

    def _choose(self, device: torch.device) -> Tuple[str, Optional[str]]:
        raise NotImplementedError

    def _resolve(self, device: torch.device) -> str:
        if self.mode is None:
            mode, why = self._choose(device)
            if why:
                warnings.warn(f"{self.owner}(mode='auto') runs eager: {why}", RuntimeWarning,
                              stacklevel=3)
            self.mode = mode
            if mode in GRAPH_MODES:
                self._runner = _GraphRunner(self.owner, self._graph_body, self._optimizers,
                                            warmup=self.warmup, max_graphs=self.max_graphs)
            elif mode == "compile":
                self._rates = _HeldLearningRates(self._optimizers,
                                                 capturable=device.type == "cuda")
            if mode in ("compile", "compile+graph") and not self._scaling:
                # the optimiser's elementwise update fused by inductor (about 10% of an MLP
                # critic step on the CPU); its lr is a held tensor, so a schedule does not
                # recompile it
                self._optimizer_steps = {id(opt): self._compile(opt.step, fullgraph=False)
                                         for opt in self._optimizers}
        if self._rates is not None:
            self._rates.sync()
        return self.mode

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
        options = {"fullgraph": True, "dynamic": False, **options, **DEFAULT_COMPILE_OPTIONS,
                   **self.compile_options}
        return torch.compile(_own_code(fn), **options)

    def _fall_back(self, exc: Exception) -> None:
        """The mode cannot run this step (found at its first call): raise under an explicit
        mode, else warn once and go eager."""
        why = str(exc) if isinstance(exc, CaptureError) else \
            f"torch.compile could not trace the step in one graph ({_first_line(exc)})"
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
        """optimizer.step() (through the GradScaler in fp16); True when the scaler skipped it."""
        if not self._scaling:
            self._optimizer_steps.get(id(optimizer), optimizer.step)()
            return False
        before = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        return self.scaler.get_scale() < before

    @property
    def captures(self) -> int:
        """CUDA graphs captured so far (graph modes)."""
        return self._runner.captures if self._runner is not None else 0


class CriticStep(_Step):
    """One critic update of a WGAN-GP-style loss in a single call.

        step = CriticStep(critic, optimizer, lambda_gp=10.0, pac=1, mode="auto")
        stats = step(real, fake, *inputs)     # inputs: extra critic arguments (labels)

    Minimises E[D(fake)] - E[D(real)] + k * penalty, where the penalty (`kind`: "wgan-gp",
    "wgan-lp", "r1", "r2", "dragan" as in `gradient_penalty`, or None for no penalty) is taken on
    every gp_every-th call (the first included) with k = gp_every (lazy regularisation). real and
    fake are detached. `scaler` (an fp16 GradScaler) and `autocast` (torch.bfloat16 or
    torch.float16: the forwards and the penalty under torch.autocast) give mixed precision. A
    DistributedDataParallel critic (eager mode) scores real and fake in one pass through the
    wrapper, as DDP allows one forward per backward, and takes the penalty through the inner
    module. Modes: see the module docstring.
    """

    owner = "CriticStep"

    def __init__(self, critic: nn.Module, optimizer: torch.optim.Optimizer, *,
                 lambda_gp: float = 10.0, pac: int = 1, kind: Optional[str] = "wgan-gp",
                 mode: str = "auto", scaler=None, autocast: Optional[torch.dtype] = None,
                 gp_every: int = 1, return_norms: bool = False, backend: str = "auto",
                 warmup: int = 3, max_graphs: int = 8, compile_options: Optional[dict] = None):
        if not isinstance(critic, nn.Module):
            raise TypeError(f"critic must be an nn.Module, got {type(critic).__name__}")
        super().__init__(mode, [optimizer], scaler, autocast, warmup, max_graphs,
                         compile_options)
        if kind is not None and kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))} or None, got "
                             f"{kind!r}")
        self.critic = critic
        self.optimizer = optimizer
        self.kind = kind
        self.lambda_gp = V.finite("lambda_gp", lambda_gp)
        self.pac = _count("pac", pac, 1)
        self.gp_every = _count("gp_every", gp_every, 1)
        self.return_norms = V.flag("return_norms", return_norms)
        self.backend = backend
        self.calls = 0
        self.target, self.one_sided, self.scale = (
            kind_settings(kind, self.lambda_gp) if kind is not None else (1.0, False, 0.0))
        self._compiled = None

    def _choose(self, device):
        return choose_mode(self.requested_mode, device, self.critic,
                           optimizers=self._optimizers, scaler=self.scaler)

    def regularises(self, call: int) -> bool:
        """Whether call number `call` (from 0) carries the penalty."""
        return self.kind is not None and call % self.gp_every == 0

    # -- the loss, in two formulations -------------------------------------------------------

    def _penalty(self, grads, input_scale=1.0):
        return gradient_norm_penalty(grads, pac=self.pac, target=self.target,
                                     one_sided=self.one_sided, input_scale=input_scale,
                                     scale=self.scale, backend=self.backend, return_norms=True)

    def _eager_loss(self, real, fake, inputs, regularise):
        """The seed codes' critic loss with the drop-in penalty (autograd's double backward)."""
        if _is_ddp(self.critic):
            scores = _wide(_first(self.critic(torch.cat([real, fake]), *inputs)))
            m = scores.shape[0] // 2
            d_real, d_fake = scores[:m].mean(), scores[m:].mean()
            inner = self.critic.module
        else:
            d_real = _wide(_first(self.critic(real, *inputs))).mean()
            d_fake = _wide(_first(self.critic(fake, *inputs))).mean()
            inner = self.critic
        wasserstein = d_real - d_fake
        loss, pen, norms = -wasserstein, None, None
        if regularise:
            x = penalty_points(self.kind, real, fake, pac=self.pac, backend=self.backend)
            _, grads, inv_scale = input_gradients(inner, x, *inputs, scaler=self.scaler)
            pen, norms = self._penalty(grads, inv_scale)
            loss = loss + (pen * self.gp_every if self.gp_every > 1 else pen)
        return loss, wasserstein, pen, norms

    def _functional_loss(self, params, frozen, real, fake, inputs, loss_scale, regularise):
        """The same loss as a function of the parameters, the input gradient by torch.func.grad:
        what torch.compile can trace (it refuses autograd.grad's double backward)."""
        weights = {**params, **frozen}

        def critic(x):
            return _wide(_first(functional_call(self.critic, weights, (x, *inputs))))

        wasserstein = critic(real).mean() - critic(fake).mean()
        loss, pen, norms = -wasserstein, None, None
        if regularise:
            # r1 / r2 evaluate at the samples themselves (torch.func needs no requires_grad_)
            x = {"r1": real, "r2": fake}.get(self.kind)
            if x is None:
                x = penalty_points(self.kind, real, fake, pac=self.pac, backend=self.backend)
            n = x.shape[0]
            if loss_scale is None:
                grads = grad(lambda x: critic(x).float().sum())(x)
            else:
                # S * mean(D), as input_gradients does under a GradScaler; n / S unscales
                grads = grad(lambda x: critic(x).float().sum() * (loss_scale / n))(x)
                grads = grads * (n / loss_scale)
            pen, norms = self._penalty(grads)
            loss = loss + (pen * self.gp_every if self.gp_every > 1 else pen)
        objective = loss if loss_scale is None else loss * loss_scale
        # torch.func's aux holds tensors only
        return objective, (loss, wasserstein) + ((pen, norms) if regularise else ())

    # -- the step bodies ---------------------------------------------------------------------

    @staticmethod
    def _pack(loss, wasserstein, pen) -> Tensor:
        values = [loss.detach(), wasserstein.detach()]
        if pen is not None:
            values.append(pen.detach().to(loss.dtype))
        return torch.stack(values)

    def run_eager(self, real, fake, inputs, regularise, graphed=False):
        """The eager step: (stats [loss, wasserstein(, penalty)], norms, skipped)."""
        if graphed:
            _zero_static_grads(self.optimizer)
        else:
            self.optimizer.zero_grad(set_to_none=True)
        with self.autocast_context(real.device, graphed):
            loss, wasserstein, pen, norms = self._eager_loss(real, fake, inputs, regularise)
        (self.scaler.scale(loss) if self._scaling else loss).backward()
        skipped = self._step_optimizer(self.optimizer)
        return self._pack(loss, wasserstein, pen), norms, skipped

    def _compiled_fn(self):
        if self._compiled is None:
            def step_fn(params, frozen, real, fake, inputs, loss_scale, regularise):
                return grad_and_value(self._functional_loss, has_aux=True)(
                    params, frozen, real, fake, inputs, loss_scale, regularise)

            self._compiled = self._compile(step_fn)
        return self._compiled

    def run_compiled(self, real, fake, inputs, regularise, graphed=False):
        """The compiled step: one graph for the loss and all gradients, then the optimiser."""
        params, frozen = {}, dict(self.critic.named_buffers())
        for name, p in self.critic.named_parameters():
            (params if p.requires_grad else frozen)[name] = p
        loss_scale = self.scaler.scale(torch.ones((), device=real.device)) if self._scaling \
            else None
        with self.autocast_context(real.device, graphed):
            grads, (_, aux) = self._compiled_fn()(params, frozen, real, fake, tuple(inputs),
                                                  loss_scale, regularise)
        loss, wasserstein, pen, norms = aux if regularise else (*aux, None, None)
        for name, p in params.items():
            if graphed:
                p.grad.copy_(grads[name])
            else:
                p.grad = grads[name]
        skipped = self._step_optimizer(self.optimizer)
        return self._pack(loss, wasserstein, pen), norms, skipped

    def run(self, mode, real, fake, inputs, regularise, graphed=False):
        """One step in `mode` ("eager" or "compile" bodies; graphed inside a capture)."""
        if mode in ("compile", "compile+graph"):
            return self.run_compiled(real, fake, inputs, regularise, graphed)
        return self.run_eager(real, fake, inputs, regularise, graphed)

    def _graph_body(self, real, fake, *rest):
        *inputs, regularise = rest
        stats, norms, _ = self.run(self.mode, real, fake, tuple(inputs), regularise, True)
        return stats, norms

    # -- the call ----------------------------------------------------------------------------

    def __call__(self, real: Tensor, fake: Tensor, *inputs) -> StepStats:
        V.pair(real, fake)
        real, fake = real.detach(), fake.detach()
        if self.kind is not None:
            V.pac(self.pac, real.shape[0])
        self._resolve(real.device)
        regularise = self.regularises(self.calls)
        self.calls += 1

        def graphed():
            stats, norms = self._runner(regularise, [real, fake, *inputs], regularise)
            return (stats.clone(), norms.clone() if norms is not None and self.return_norms
                    else None, False)

        stats, norms, skipped = self._execute(
            graphed, lambda mode: self.run(mode, real, fake, inputs, regularise))
        return StepStats(stats[0], stats[1], stats[2] if regularise else None,
                         norms.detach() if self.return_norms and norms is not None else None,
                         skipped)


class GeneratorStep(_Step):
    """One generator update in a single call: minimises -E[D(G(z))].

        step = GeneratorStep(generator, critic, optimizer, mode="auto")
        loss_g = step(z, *inputs)       # inputs: extra critic arguments

    The critic's parameters are held fixed (detached: the step computes no critic gradients).
    BatchNorm in the generator is fine in every mode. Modes as for CriticStep; "compile"
    compiles the forward and runs its compiled backward through autograd.
    """

    owner = "GeneratorStep"

    def __init__(self, generator: nn.Module, critic: nn.Module,
                 optimizer: torch.optim.Optimizer, *, mode: str = "auto", scaler=None,
                 autocast: Optional[torch.dtype] = None, warmup: int = 3, max_graphs: int = 8,
                 compile_options: Optional[dict] = None):
        for name, m in (("generator", generator), ("critic", critic)):
            if not isinstance(m, nn.Module):
                raise TypeError(f"{name} must be an nn.Module, got {type(m).__name__}")
        super().__init__(mode, [optimizer], scaler, autocast, warmup, max_graphs,
                         compile_options)
        self.generator = generator
        self.critic = critic
        self.optimizer = optimizer
        self._compiled = None

    def _choose(self, device):
        return choose_mode(self.requested_mode, device, self.critic, modules=[self.generator],
                           optimizers=self._optimizers, scaler=self.scaler, check_critic=False)

    def _loss(self, z, *inputs):
        inner = self.critic.module if _is_ddp(self.critic) else self.critic
        fixed = {n: p.detach() for n, p in inner.named_parameters()}
        fake = self.generator(z)
        return -_wide(_first(functional_call(inner, fixed, (fake, *inputs)))).mean()

    def run(self, mode, z, inputs, graphed=False) -> Tensor:
        """One step in `mode`; returns the detached loss."""
        if graphed:
            _zero_static_grads(self.optimizer)
        else:
            self.optimizer.zero_grad(set_to_none=True)
        loss_fn = self._loss
        if mode in ("compile", "compile+graph"):
            if self._compiled is None:
                self._compiled = self._compile(self._loss)
            loss_fn = self._compiled
        with self.autocast_context(z.device, graphed):
            loss = loss_fn(z, *inputs)
        (self.scaler.scale(loss) if self._scaling else loss).backward()
        self._step_optimizer(self.optimizer)
        return loss.detach()

    def _graph_body(self, z, *rest):
        *inputs, _ = rest
        return (self.run(self.mode, z, tuple(inputs), graphed=True),)

    def __call__(self, z: Tensor, *inputs) -> Tensor:
        V.tensor("z", z)
        self._resolve(z.device)
        return self._execute(lambda: self._runner(None, [z, *inputs], None)[0].clone(),
                             lambda mode: self.run(mode, z, inputs))


class TrainStep(_Step):
    """A whole WGAN-GP iteration (Gulrajani et al., Algorithm 1) in one call: n_critic critic
    steps, each on its own real batch and fresh noise, then one generator step.

        train = TrainStep(CriticStep(critic, opt_c), GeneratorStep(generator, critic, opt_g),
                          latent_dim=128, n_critic=5)
        stats = train(reals)          # n_critic real batches: a sequence or a [n_critic, B, ...]

    Noise is torch.randn(B, latent_dim) on the batches' device; the critic's fakes are G(z)
    under no_grad. In the graph modes the whole iteration is one CUDA graph (the noise drawn
    inside it, fresh on each replay). `mode` defaults to the critic step's; the sub-steps'
    settings (penalty, gp_every, scaler, autocast) apply, their own mode is not used.
    For conditional models, call the two steps yourself.
    """

    owner = "TrainStep"

    def __init__(self, critic_step: CriticStep, generator_step: GeneratorStep, *,
                 latent_dim, n_critic: int = 5, mode: Optional[str] = None,
                 warmup: Optional[int] = None, max_graphs: Optional[int] = None):
        if not isinstance(critic_step, CriticStep):
            raise TypeError(f"critic_step must be a CriticStep, got {type(critic_step).__name__}")
        if not isinstance(generator_step, GeneratorStep):
            raise TypeError(f"generator_step must be a GeneratorStep, got "
                            f"{type(generator_step).__name__}")
        if critic_step.autocast != generator_step.autocast:
            raise ValueError(f"critic_step and generator_step must use one autocast dtype, got "
                             f"{critic_step.autocast} and {generator_step.autocast}")
        super().__init__(critic_step.requested_mode if mode is None else mode,
                         [critic_step.optimizer, generator_step.optimizer],
                         critic_step.scaler, critic_step.autocast,
                         critic_step.warmup if warmup is None else warmup,
                         critic_step.max_graphs if max_graphs is None else max_graphs,
                         critic_step.compile_options)
        self.critic_step = critic_step
        self.generator_step = generator_step
        shape = (latent_dim,) if not isinstance(latent_dim, (tuple, list, torch.Size)) \
            else tuple(latent_dim)
        self.latent_shape = tuple(_count("latent_dim", d, 1) for d in shape)
        self.n_critic = _count("n_critic", n_critic, 1)

    def _choose(self, device):
        g = self.generator_step
        return choose_mode(self.requested_mode, device, self.critic_step.critic,
                           modules=[g.generator], optimizers=self._optimizers,
                           scaler=self.critic_step.scaler or g.scaler)

    def _noise(self, real: Tensor) -> Tensor:
        return torch.randn(real.shape[0], *self.latent_shape, device=real.device)

    def _iteration(self, mode, reals, pattern, graphed=False):
        """(stats of the last critic step, the last penalty and norms of the iteration (None
        where no step carried it), the generator loss, whether the last step was skipped)."""
        c, g = self.critic_step, self.generator_step
        pen = norms = None
        for real, regularise in zip(reals, pattern):
            with torch.no_grad(), self.autocast_context(real.device, graphed):
                fake = g.generator(self._noise(real))
            stats, step_norms, skipped = c.run(mode, real, fake.to(real.dtype), (), regularise,
                                               graphed)
            if regularise:
                pen, norms = stats[2], step_norms
        loss_g = g.run(mode, self._noise(reals[0]), (), graphed)
        return stats, pen, norms, loss_g, skipped

    def _graph_body(self, *rest):
        *reals, pattern = rest
        return self._iteration(self.mode, reals, pattern, graphed=True)[:4]

    def __call__(self, reals) -> TrainStats:
        if isinstance(reals, Tensor):
            reals = list(reals.unbind(0)) if reals.dim() > 1 else [reals]
        reals = [r.detach() for r in reals]
        if len(reals) != self.n_critic:
            raise ValueError(f"reals must hold n_critic={self.n_critic} real batches, got "
                             f"{len(reals)}")
        for i, r in enumerate(reals):
            V.tensor(f"reals[{i}]", r)
            if r.shape != reals[0].shape:
                raise ValueError(f"the real batches must share one shape, got {list(r.shape)} "
                                 f"at {i} and {list(reals[0].shape)} at 0")
        c = self.critic_step
        if c.kind is not None:
            V.pac(c.pac, reals[0].shape[0])
        self._resolve(reals[0].device)
        pattern = tuple(c.regularises(c.calls + i) for i in range(self.n_critic))
        c.calls += self.n_critic

        def graphed():
            stats, pen, norms, loss_g = self._runner(pattern, reals, pattern)
            return (stats.clone(), pen.clone() if pen is not None else None,
                    norms.clone() if norms is not None and c.return_norms else None,
                    loss_g.clone(), False)

        stats, pen, norms, loss_g, skipped = self._execute(
            graphed, lambda mode: self._iteration(mode, reals, pattern))
        critic = StepStats(stats[0], stats[1], pen,
                           norms.detach() if c.return_norms and norms is not None else None,
                           skipped)
        return TrainStats(critic, loss_g)
