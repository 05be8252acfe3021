"""Whole training steps in one call: `CriticStep`, `GeneratorStep` and `TrainStep`.

    step = wgangp_fast.CriticStep(critic, optimizer, lambda_gp=10.0, mode="auto")
    stats = step(real, fake)        # zero_grad, critic on real and fake, penalty, backward, step
    stats.loss, stats.wasserstein, stats.penalty

A critic step of WGAN-GP is some 250 eager ops: the critic's forward on real, fake and the
interpolates, its create_graph input gradient and the double backward through it, then the
optimiser. The fused penalty ops cannot touch most of them; these classes run the whole step in
one of five modes:

- "eager": the drop-in path (`gradient_penalty` in the usual hand-written loop). The RNG is consumed
  as such a loop consumes it: dropout masks of D(real), then of D(fake), then alpha, then the masks
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

Refusals (an explicit mode raises ValueError; "auto" falls back to eager with a warning), all
decided in policy.py: buffer-mutating layers in the critic (BatchNorm, spectral norm: they also
break the per-sample meaning of the penalty), graph modes on the CPU, with a GradScaler, or with
an optimiser whose step cannot be captured, and more input signatures than `max_graphs` in a
graph mode. A critic torch.compile cannot trace
in one graph (data-dependent Python control flow) or a step that synchronises with the host
inside a capture raises at the first call with the reason (or falls back under "auto").
DistributedDataParallel models run in every mode: the steps average their gradients over the
process group before each update.

The package: policy.py (which mode runs, and why not), capture.py (the CUDA-graph machinery and
its CPU simulation, `simulate_graphs=True`), base.py (what the steps share: mode resolution,
autocast, compile, the optimiser step, DDP averaging), critic.py (CriticStep), generator.py
(GeneratorStep), iteration.py (TrainStep).
"""

from __future__ import annotations

from .capture import CaptureError
from .critic import CriticStep, StepStats, clip_weights
from .generator import GeneratorStep
from .iteration import TrainStats, TrainStep
from .policy import COMPILED_MODES, GRAPH_MODES, MODES, choose_mode, mutating_layers

__all__ = ["COMPILED_MODES", "GRAPH_MODES", "MODES", "CaptureError", "CriticStep",
           "GeneratorStep", "StepStats", "TrainStats", "TrainStep", "choose_mode",
           "clip_weights", "mutating_layers"]
