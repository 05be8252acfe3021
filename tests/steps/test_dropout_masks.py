"""Whether a step's dropout masks are right, read from the step's own outputs: the critic's
forward on the interpolates, its input gradient and the penalty's parameter gradient must
share one mask, in every mode and with every random generator (eager's; inductor's own;
eager's through `torch._inductor.config.fallback_random`). Unlike a comparison with the eager
mode's values, this does not depend on the order in which a mode draws its masks, which
inductor is free to change: torch 2.11's inductor moves the random draws of a compiled step
ahead of the computation (its peak-memory reordering), so the compiled step draws eager's
values in another order than the eager step does.

The critic makes the masks legible. With real = fake = 1 every interpolate is 1 (alpha drops
out), and D(x) = sum_k v_k q(dropout(x)_k), q(y) = y + y^2 / 2, v_k = 10^(k/2), has the input
gradient g_k = v_k q'(y_k) m'_k s, where y_k = m_k s, m is the mask the forward drew, m' the
one the gradient applied and s = 1 / (1 - p) = 2. So g_k^2 / (4 v_k^2) is 9 where both keep
unit k, 1 where only the gradient keeps it (a mask not shared) and 0 where the gradient drops
it, and each sample's ||g||^2 / 4 = sum_k 10^k t_k spells its mask in decimal digits. The
parameter gradient then follows: the penalty's part is known from those digits, and what is left
is the Wasserstein part, (4 / N) times an integer per unit (q(s) = 4), whose values must also
give the step's Wasserstein estimate. A double backward that applied another mask than the norm's
leaves a remainder off that lattice.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch
import torch._inductor.config as inductor_config
from torch import nn

from wgangp_fast import steps
from wgangp_fast.steps import CriticStep

pytestmark = pytest.mark.usefixtures("one_thread")

P = 0.5
S = 1.0 / (1.0 - P)
N, D = 16, 8
LAMBDA = 10.0


def _mask(like):
    return torch.empty_like(like).bernoulli_(1 - P)


class RedrawingDropout(torch.autograd.Function):
    """A wrong dropout for the controls. redraw="gradient": its backward draws a fresh mask
    instead of reusing the forward's (the input gradient sees another mask than the forward);
    redraw="double-backward": the backward reuses the forward's mask, but the derivative of that
    backward (what the penalty's parameter gradient goes through) draws another."""

    @staticmethod
    def forward(ctx, x, redraw):
        mask = _mask(x)
        ctx.save_for_backward(mask)
        ctx.redraw = redraw
        return x * mask * S

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        if ctx.redraw == "gradient":
            return g * _mask(g) * S, None
        return _MaskedBackward.apply(g, mask), None


class _MaskedBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g, mask):
        return g * mask * S

    @staticmethod
    def backward(ctx, gg):
        return gg * _mask(gg) * S, None


class LegibleCritic(nn.Module):
    """D(x) = sum_k v_k q(dropout(x)_k), q(y) = y + y^2 / 2, v_k = 10^(k/2) (module docstring)."""

    def __init__(self, redraw=None):
        super().__init__()
        self.v = nn.Parameter(10.0 ** (torch.arange(D, dtype=torch.float64) / 2))
        self.drop = nn.Dropout(P)
        self.redraw = redraw

    def forward(self, x):
        y = RedrawingDropout.apply(x, self.redraw) if self.redraw else self.drop(x)
        return ((y + 0.5 * y * y) * self.v).sum(1, keepdim=True)


class Reading(NamedTuple):
    digits: torch.Tensor  # [N, D]: 9 both masks keep the unit, 1 only the gradient's, 0 dropped
    residue: float  # how far ||g||^2 / 4 is from an integer (0 where the norms spell digits)
    lattice: float  # how far the Wasserstein part of the gradient is from (4 / N) * integers
    wasserstein: float  # the Wasserstein estimate those integers give against the step's (rel.)
    penalty: float  # lambda * mean((n - 1)^2) from the norms against the step's penalty (rel.)


def read_step(stats, critic) -> Reading:
    """What the step's norms, penalty, Wasserstein estimate and v.grad say about its masks."""
    n = stats.norms.detach().double().cpu()
    v = critic.v.detach().double().cpu()
    grad = critic.v.grad.detach().double().cpu()
    spelt = n * n / 4
    whole = spelt.round()
    digits = torch.stack([torch.div(whole, 10.0**k, rounding_mode="floor") % 10
                          for k in range(D)], dim=1)
    g2 = 4 * v * v * digits
    # the kernels give a zero norm a zero derivative: no 1 / n there
    inv = torch.where(n > 0, 1 / n.clamp_min(1e-300), torch.zeros_like(n))
    from_penalty = (2 * LAMBDA / N) * ((1 - inv)[:, None] * g2 / v).sum(0)
    counts = (grad - from_penalty) * N / 4
    whole_counts = counts.round()
    wasserstein = -(4 / N) * (v * whole_counts).sum()
    penalty = LAMBDA * ((n - 1) ** 2).mean()
    return Reading(digits.long(), (spelt - whole).abs().max().item(),
                   (counts - whole_counts).abs().max().item(),
                   _rel(wasserstein, stats.wasserstein), _rel(penalty, stats.penalty))


def _rel(expected, got):
    expected, got = expected.double().cpu(), got.detach().double().cpu()
    return ((expected - got).abs() / expected.abs().clamp_min(1.0)).item()


def _calls(mode, device, calls, redraw=None, options=None):
    torch.manual_seed(3)
    critic = LegibleCritic(redraw).to(device)
    simulate = mode in steps.GRAPH_MODES and device == "cpu"
    step = CriticStep(critic, torch.optim.SGD(critic.parameters(), lr=0.0), lambda_gp=LAMBDA,
                      mode=mode, warmup=1, return_norms=True, compile_options=options,
                      simulate_graphs=simulate)
    ones = torch.ones(N, D, dtype=torch.float64, device=device)
    readings = []
    for _ in range(calls):
        stats = step(ones, ones)
        readings.append(read_step(stats, critic))
    return step, readings


def _assert_one_mask(readings):
    for r in readings:
        assert r.residue < 1e-6, "the norms do not spell a mask: the critic's algebra broke"
        values = set(r.digits.unique().tolist())
        assert values <= {0, 1, 9}
        assert 9 in values and 0 in values, f"dropout not active: digits {sorted(values)}"
        # forward dropped the unit, its input gradient kept it: the penalty saw another mask
        assert 1 not in values, f"{(r.digits == 1).sum().item()} units with unshared masks"
        assert r.lattice < 1e-6, "the penalty's parameter gradient applied another mask"
        assert r.wasserstein < 1e-9 and r.penalty < 1e-9
    for a, b in zip(readings, readings[1:]):
        assert not torch.equal(a.digits, b.digits), "two calls drew the same masks"


CPU_CASES = [
    ("eager", {}, None),
    # inductor with its own generator, then with eager's in the order inductor schedules
    ("compile", {}, None),
    ("compile", {}, {"fallback_random": True}),
    ("compile", {"backend": "aot_eager"}, None),
    ("graph", {}, None),
    ("compile+graph", {"backend": "aot_eager"}, None),
]


@pytest.mark.parametrize("mode,options,inductor", CPU_CASES,
                         ids=["eager", "compile", "compile-fallback_random", "compile-aot_eager",
                              "graph-simulated", "compile+graph-simulated"])
def test_forward_gradient_and_double_backward_share_one_mask_cpu(mode, options, inductor):
    with inductor_config.patch(**(inductor or {})):
        _, readings = _calls(mode, "cpu", 3, options=options)
    _assert_one_mask(readings)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", ["eager", "compile", "graph", "compile+graph"])
def test_forward_gradient_and_double_backward_share_one_mask_cuda(mode):
    """On the GPU: the graph modes' masks come from the Philox stream inside a real capture,
    fresh at every replay (4 calls: a warm-up, the capture and its replay, a replay)."""
    step, readings = _calls(mode, "cuda", 4)
    if mode in steps.GRAPH_MODES:
        assert step.captures == 1
    _assert_one_mask(readings)


@pytest.mark.parametrize("redraw,finds", [("gradient", "unshared masks"),
                                           ("double-backward", "another mask")])
def test_the_reading_sees_a_mask_that_is_not_shared(redraw, finds):
    """The controls: a dropout whose backward, or whose backward's derivative, draws a mask of
    its own is caught (eager steps)."""
    _, readings = _calls("eager", "cpu", 2, redraw=redraw)
    assert all(r.residue < 1e-6 for r in readings)
    with pytest.raises(AssertionError, match=finds):
        _assert_one_mask(readings)
