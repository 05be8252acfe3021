"""Whole training steps (wgangp_fast.steps): every mode against a plain-autograd double-backward
step, dropout masks and RNG per mode, labelled critics, learning-rate schedules, refusals, and
the graph modes' bookkeeping (static buffers, one capture per input signature) in the CPU
simulation. The CUDA capture itself runs in tests/steps/test_steps_gpu.py on a GPU."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torch._inductor.config as inductor_config
from torch import nn

import wgangp_fast
from wgangp_fast import steps
from wgangp_fast.steps import CriticStep, GeneratorStep, TrainStep
from wgangp_fast.train.models import ConvCritic, MLPCritic, MLPGenerator, PacCritic

# aot_eager: dynamo and AOTAutograd trace the torch.func formulation as inductor would receive
# it, without inductor's code generation (seconds per compile on this machine instead of tens)
FAST = {"backend": "aot_eager"}


pytestmark = pytest.mark.usefixtures("one_thread")


def _sim(mode):
    """The graph modes' bookkeeping simulated on the CPU (simulate_graphs), the others as they
    are."""
    return mode in steps.GRAPH_MODES


@pytest.fixture
def eager_rng():
    """Inductor's random ops replaced by eager's, in graph order. Its peak-memory reordering is
    off: torch 2.11's moves a compiled step's random draws ahead of the computation, so they
    would take eager's values in another order (the masks are shared all the same:
    tests/steps/test_dropout_masks.py reads them whatever the order)."""
    with inductor_config.patch(fallback_random=True, reorder_for_peak_memory=False):
        yield


class LabelledCritic(nn.Module):
    """critic(x, labels): a class embedding added to the first layer's output."""

    def __init__(self, d=6, classes=3, hidden=8):
        super().__init__()
        self.fc = nn.Linear(d, hidden)
        self.embed = nn.Embedding(classes, hidden)
        self.out = nn.Linear(hidden, 1)

    def forward(self, x, labels):
        return self.out(torch.nn.functional.leaky_relu(self.fc(x) + self.embed(labels), 0.2))


def _critics():
    """(name, critic, sample shape, pac, extra inputs) for every critic of models.py and a
    labelled one."""
    torch.manual_seed(0)
    labels = torch.tensor([0, 2, 1, 1, 0, 2, 2, 1])
    return [
        ("mlp", MLPCritic((2, 3), hidden_dim=3), (2, 3), 1, ()),
        ("conv", ConvCritic(channels=1, image_size=8, feature_maps=2), (1, 8, 8), 1, ()),
        ("pac", PacCritic(5, pac=2, hidden=(6, 5), dropout=0.0), (5,), 2, ()),
        ("labelled", LabelledCritic(), (6,), 1, (labels,)),
    ]


def _reference_step(critic, opt, real, fake, inputs, alpha, pac, lambda_gp=10.0):
    """A plain-autograd WGAN-GP critic step with the given alpha (seed 000's formulas)."""
    opt.zero_grad(set_to_none=True)
    loss_w = critic(fake, *inputs).mean() - critic(real, *inputs).mean()
    shape = (alpha.shape[0], pac) + (1,) * (real.dim() - 1)
    a = alpha.reshape(-1, *([1] * real.dim())).expand(shape).reshape(real.shape[0],
                                                                    *([1] * (real.dim() - 1)))
    x = (a * real + (1 - a) * fake).requires_grad_(True)
    out = critic(x, *inputs)
    (g,) = torch.autograd.grad(out, x, torch.ones_like(out), create_graph=True)
    norms = g.reshape(real.shape[0] // pac, -1).norm(2, dim=1)
    pen = lambda_gp * ((norms - 1) ** 2).mean()
    (loss_w + pen).backward()
    opt.step()
    return loss_w + pen, pen


def _alpha_drawn_by(step_call, seed, m, device="cpu"):
    """The alpha a step draws after torch.manual_seed(seed): the eager modes draw it after the
    critic's forwards on real and fake, which here draw nothing (no dropout)."""
    torch.manual_seed(seed)
    return torch.rand(m, device=device)


def _max_rel(a_params, b_params, start):
    """||a - b|| / ||b - start|| over all parameters together: the error relative to the
    update."""
    diff = torch.cat([(a - b).detach().reshape(-1) for a, b in zip(a_params, b_params)])
    update = torch.cat([(b - s).detach().reshape(-1) for b, s in zip(b_params, start)])
    assert update.norm() > 0
    return (diff.norm() / update.norm()).item()


@pytest.mark.parametrize("mode", ["eager", "compile", "graph", "compile+graph"])
@pytest.mark.parametrize("case", range(4), ids=["mlp", "conv", "pac", "labelled"])
def test_one_step_equals_plain_autograd_float64(case, mode):
    """SGD with momentum: the update is linear in the gradients, so the comparison sees the
    step's gradients alone. (A compiled or captured Adam keeps its step counter in a float32
    tensor, whose bias corrections differ from eager's double ones by ~1e-7 relative.)"""
    name, critic, shape, pac, inputs = _critics()[case]
    critic = critic.double()
    real = torch.randn(8, *shape, dtype=torch.float64)
    fake = torch.randn(8, *shape, dtype=torch.float64)
    start = [p.detach().clone() for p in critic.parameters()]
    ours, theirs = copy.deepcopy(critic), copy.deepcopy(critic)
    opt = torch.optim.SGD(ours.parameters(), lr=1e-2, momentum=0.9)
    step = CriticStep(ours, opt, pac=pac, mode=mode, warmup=0, compile_options=FAST,
                      simulate_graphs=_sim(mode))
    torch.manual_seed(7)
    stats = step(real, fake, *inputs)
    alpha = _alpha_drawn_by(step, 7, 8 // pac)
    ref_opt = torch.optim.SGD(theirs.parameters(), lr=1e-2, momentum=0.9)
    loss, pen = _reference_step(theirs, ref_opt, real, fake, inputs, alpha.double(), pac)
    torch.testing.assert_close(stats.loss, loss.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(stats.penalty, pen.detach(), rtol=1e-12, atol=1e-12)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert (a - b).abs().max().item() <= 1e-10
    assert _max_rel(list(ours.parameters()), list(theirs.parameters()), start) < 1e-10


@pytest.mark.parametrize("case", range(4), ids=["mlp", "conv", "pac", "labelled"])
def test_eager_float32_step_within_1e5_of_plain_autograd(case):
    """SGD, whose update is linear in the gradients, so the comparison sees the gradients'
    float32 rounding and not Adam's normalisation of near-zero ones."""
    name, critic, shape, pac, inputs = _critics()[case]
    real, fake = torch.randn(8, *shape), torch.randn(8, *shape)
    start = [p.detach().clone() for p in critic.parameters()]
    ours, theirs = copy.deepcopy(critic), copy.deepcopy(critic)
    step = CriticStep(ours, torch.optim.SGD(ours.parameters(), lr=0.1), pac=pac, mode="eager")
    torch.manual_seed(3)
    step(real, fake, *inputs)
    alpha = _alpha_drawn_by(step, 3, 8 // pac)
    _reference_step(theirs, torch.optim.SGD(theirs.parameters(), lr=0.1), real, fake, inputs,
                    alpha, pac)
    assert _max_rel(list(ours.parameters()), list(theirs.parameters()), start) < 1e-5


@pytest.mark.parametrize("case", range(4), ids=["mlp", "conv", "pac", "labelled"])
def test_compiled_float32_step_with_inductor_within_1e5(case, eager_rng):
    """The compiled step through inductor (its code generation, eager RNG) against the eager
    step: parameters after one SGD step within 1e-5 of the update."""
    name, critic, shape, pac, inputs = _critics()[case]
    real, fake = torch.randn(8, *shape), torch.randn(8, *shape)
    start = [p.detach().clone() for p in critic.parameters()]
    results = []
    for mode in ("eager", "compile"):
        c = copy.deepcopy(critic)
        step = CriticStep(c, torch.optim.SGD(c.parameters(), lr=0.1), pac=pac, mode=mode)
        torch.manual_seed(11)
        step(real, fake, *inputs)
        results.append(list(c.parameters()))
    assert _max_rel(results[1], results[0], start) < 1e-5


@pytest.mark.parametrize("mode", ["compile", "graph", "compile+graph"])
def test_dropout_critic_equals_eager_with_eager_rng(mode, eager_rng):
    """CTGAN's critic with dropout in training mode: with inductor's RNG replaced by eager's
    (and in the graph modes' simulation) every mode draws the same masks in the same order as
    eager autograd, so the forward on the interpolates and its input gradient share one mask,
    and six steps (gp_every 2) give the same parameters."""
    torch.manual_seed(1)
    critic = PacCritic(5, pac=2, hidden=(7, 6), dropout=0.5)
    real, fake = torch.randn(8, 5), torch.randn(8, 5)
    out = {}
    for m in ("eager", mode):
        c = copy.deepcopy(critic)
        step = CriticStep(c, torch.optim.Adam(c.parameters(), lr=1e-2, betas=(0.0, 0.9)), pac=2,
                          mode=m, gp_every=2, warmup=1, return_norms=True,
                          compile_options={} if mode == "compile" else FAST,
                          simulate_graphs=_sim(m))
        torch.manual_seed(5)
        out[m] = ([step(real, fake) for _ in range(6)], c)
    for a, b in zip(out["eager"][0], out[mode][0]):
        torch.testing.assert_close(a.loss, b.loss, rtol=1e-6, atol=1e-6)
        assert (a.penalty is None) == (b.penalty is None)
        if a.norms is not None:
            torch.testing.assert_close(a.norms, b.norms, rtol=1e-6, atol=1e-6)
    for p, q in zip(out["eager"][1].parameters(), out[mode][1].parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)


class SquareCritic(nn.Module):
    """D(x) = s/2 * sum(x^2) per sample: its input gradient is s * x, so with real = 0 the
    per-sample gradient norm is s * (1 - alpha) * ||fake||, which reveals the alpha drawn."""

    def __init__(self):
        super().__init__()
        self.s = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return 0.5 * self.s * x.reshape(x.shape[0], -1).square().sum(1, keepdim=True)


@pytest.mark.parametrize("mode", ["eager", "compile", "graph"])
def test_each_call_draws_fresh_uniform_alphas(mode):
    """Alphas recovered from the norms over 40 steps: fresh at every call (no two calls alike)
    and uniform on [0, 1) (Kolmogorov-Smirnov)."""
    from scipy import stats as scipy_stats

    critic = SquareCritic()
    step = CriticStep(critic, torch.optim.SGD(critic.parameters(), lr=0.0), mode=mode,
                      return_norms=True, warmup=1, compile_options={},
                      simulate_graphs=_sim(mode))
    real = torch.zeros(32, 3)
    fake = torch.ones(32, 3) / math.sqrt(3)
    draws = [1 - step(real, fake).norms for _ in range(40)]
    for a, b in zip(draws, draws[1:]):
        assert not torch.equal(a, b)
    alphas = torch.cat(draws).double().numpy()
    assert alphas.min() >= 0 and alphas.max() < 1
    assert scipy_stats.kstest(alphas, "uniform").pvalue > 1e-3


def test_stats_hold_loss_wasserstein_and_penalty():
    torch.manual_seed(2)
    critic = MLPCritic((4,), hidden_dim=3)
    step = CriticStep(critic, torch.optim.SGD(critic.parameters(), lr=0.0), mode="eager",
                      gp_every=3, return_norms=True)
    real, fake = torch.randn(6, 4), torch.randn(6, 4)
    w = (critic(real).mean() - critic(fake).mean()).detach()
    first, second = step(real, fake), step(real, fake)
    torch.testing.assert_close(first.wasserstein, w)
    torch.testing.assert_close(first.loss, -w + 3 * first.penalty)
    assert first.norms.shape == (6,) and not first.skipped
    assert second.penalty is None and second.norms is None
    torch.testing.assert_close(second.loss, -w)


def test_eager_mode_is_the_seed_loop_with_the_drop_in():
    """The eager step consumes the RNG exactly as the seed loop with gradient_penalty does, and
    with seed 000's two backward calls (the penalty's first) gives its weights bit for bit."""
    torch.manual_seed(4)
    critic = PacCritic(5, pac=2, hidden=(6, 6), dropout=0.5)
    real, fake = torch.randn(8, 5), torch.randn(8, 5)
    a, b = copy.deepcopy(critic), copy.deepcopy(critic)
    step = CriticStep(a, torch.optim.Adam(a.parameters(), lr=1e-2, betas=(0.0, 0.9)), pac=2,
                      mode="eager")
    opt = torch.optim.Adam(b.parameters(), lr=1e-2, betas=(0.0, 0.9))
    for seed in range(3):
        torch.manual_seed(seed)
        got = step(real, fake)
        torch.manual_seed(seed)
        opt.zero_grad(set_to_none=True)
        d_real, d_fake = b(real).mean(), b(fake).mean()
        gp = wgangp_fast.gradient_penalty(b, real, fake, lambda_gp=10.0, pac=2)
        loss = d_fake - d_real + gp
        gp.backward(retain_graph=True)
        (d_fake - d_real).backward()
        opt.step()
        assert torch.equal(got.loss, loss.detach())
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_compile_follows_an_lr_schedule_without_recompiling():
    """A float lr changed before every call (as the trainer's linear decay does) reaches the
    compiled optimiser step through its held tensor: the same parameters as eager, and one
    compiled graph per function."""
    import torch._dynamo

    torch.manual_seed(6)
    critic = MLPCritic((4,), hidden_dim=3)
    real, fake = torch.randn(6, 4), torch.randn(6, 4)
    out = {}
    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for mode in ("eager", "compile"):
            c = copy.deepcopy(critic)
            opt = torch.optim.Adam(c.parameters(), lr=1e-2, betas=(0.0, 0.9))
            step = CriticStep(c, opt, mode=mode, kind="r1", compile_options=FAST)
            for k in range(4):
                opt.param_groups[0]["lr"] = 1e-2 * (1 - k / 4)
                step(real, fake)
            out[mode] = c
    start = list(critic.parameters())
    assert _max_rel(list(out["compile"].parameters()), list(out["eager"].parameters()),
                    start) < 1e-5


def test_every_penalty_kind_compiles_to_eager_values(eager_rng):
    torch.manual_seed(8)
    critic = MLPCritic((4,), hidden_dim=3)
    real, fake = torch.randn(6, 4), torch.randn(6, 4)
    for kind in ("wgan-gp", "wgan-lp", "r1", "r2", "dragan"):
        got = []
        for mode in ("eager", "compile"):
            c = copy.deepcopy(critic)
            step = CriticStep(c, torch.optim.SGD(c.parameters(), lr=0.1), mode=mode, kind=kind,
                              compile_options=FAST)
            torch.manual_seed(9)
            got.append(step(real, fake).penalty)
        torch.testing.assert_close(got[0], got[1], rtol=1e-5, atol=1e-7, msg=kind)


# ---------------------------------------------------------------------------------------------
# Generator and whole-iteration steps
# ---------------------------------------------------------------------------------------------


def _gan(seed=0):
    torch.manual_seed(seed)
    gen = MLPGenerator(latent_dim=3, hidden_dim=4, out_shape=(5,), output_activation=None)
    critic = MLPCritic((5,), hidden_dim=4)
    return gen, critic


@pytest.mark.parametrize("mode", ["compile", "graph", "compile+graph"])
def test_train_step_equals_eager(mode, eager_rng):
    """n_critic critic steps and a generator step (BatchNorm in the generator) per call: the
    same losses and weights as the eager iteration, over three iterations with gp_every 2.

    Adam's eps is 1e-3: the generator's biases before BatchNorm have a true gradient of zero, so
    theirs is float rounding noise, and at the default eps Adam normalises that noise to a
    sizeable step whose sign depends on the last bit (eager mode's two backward calls and the
    compiled graph sum the gradients in different orders)."""
    gen, critic = _gan()
    reals = torch.randn(3, 8, 5)
    out = {}
    for m in ("eager", mode):
        g, c = copy.deepcopy(gen), copy.deepcopy(critic)
        adam = dict(lr=1e-2, betas=(0.0, 0.9), eps=1e-3)
        train = TrainStep(
            CriticStep(c, torch.optim.Adam(c.parameters(), **adam), mode=m,
                       gp_every=2, warmup=1, compile_options=FAST, simulate_graphs=_sim(m)),
            GeneratorStep(g, c, torch.optim.Adam(g.parameters(), **adam),
                          compile_options=FAST),
            latent_dim=3, n_critic=3)
        torch.manual_seed(12)
        out[m] = ([train(reals) for _ in range(3)], g, c)
    for a, b in zip(out["eager"][0], out[mode][0]):
        torch.testing.assert_close(a.loss_g, b.loss_g, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a.critic.loss, b.critic.loss, rtol=1e-5, atol=1e-6)
    for module in (1, 2):
        for p, q in zip(out["eager"][module].state_dict().values(),
                        out[mode][module].state_dict().values()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_generator_step_leaves_the_critic_alone():
    gen, critic = _gan(1)
    opt = torch.optim.SGD(gen.parameters(), lr=0.1)
    before = copy.deepcopy(critic.state_dict())
    loss = GeneratorStep(gen, critic, opt, mode="eager")(torch.randn(8, 3))
    assert loss.shape == () and loss.grad_fn is None
    assert all(p.grad is None for p in critic.parameters())
    for k, v in critic.state_dict().items():
        assert torch.equal(v, before[k])


# ---------------------------------------------------------------------------------------------
# The graph modes' bookkeeping (CPU simulation)
# ---------------------------------------------------------------------------------------------


def test_graph_mode_warms_up_then_captures_once_per_signature():
    torch.manual_seed(3)
    critic = MLPCritic((4,), hidden_dim=3)
    opt = torch.optim.Adam(critic.parameters(), lr=1e-2, betas=(0.0, 0.9))
    step = CriticStep(critic, opt, mode="graph", warmup=2, max_graphs=2, simulate_graphs=True)
    grads = None
    for _ in range(5):
        step(torch.randn(6, 4), torch.randn(6, 4))
        if grads is None:
            grads = [p.grad for p in critic.parameters()]
    assert step.captures == 1
    # the gradients stay the same tensors, even after a set_to_none zero_grad outside
    opt.zero_grad(set_to_none=True)
    step(torch.randn(6, 4), torch.randn(6, 4))
    assert all(p.grad is g for p, g in zip(critic.parameters(), grads))
    for _ in range(3):
        step(torch.randn(4, 4), torch.randn(4, 4))
    assert step.captures == 2
    with pytest.raises(ValueError, match="new input signature.*max_graphs"):
        for _ in range(3):
            step(torch.randn(2, 4), torch.randn(2, 4))


def test_graph_mode_lr_schedule_needs_no_recapture_other_changes_do():
    torch.manual_seed(3)
    critic = MLPCritic((4,), hidden_dim=3)
    opt = torch.optim.Adam(critic.parameters(), lr=1e-2, betas=(0.0, 0.9))
    step = CriticStep(critic, opt, mode="graph", warmup=0, simulate_graphs=True)
    real, fake = torch.randn(6, 4), torch.randn(6, 4)
    for k in range(4):
        opt.param_groups[0]["lr"] = 1e-2 / (k + 1)
        step(real, fake)
    assert step.captures == 1
    assert opt.param_groups[0]["lr"].item() == pytest.approx(1e-2 / 4)
    opt.param_groups[0]["betas"] = (0.5, 0.9)
    step(real, fake)
    assert step.captures == 2


# ---------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------


class BatchNormCritic(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.LeakyReLU(0.2),
                                 nn.Linear(3, 1))

    def forward(self, x):
        return self.net(x)


class BranchingCritic(nn.Module):
    """Data-dependent Python control flow: torch.compile cannot trace it in one graph."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 1)

    def forward(self, x):
        return self.fc(x) if x.sum() > 0 else -self.fc(x)


def _step(critic, mode, **kw):
    """A step with graphs simulated on the CPU unless the caller says otherwise."""
    kw.setdefault("simulate_graphs", True)
    return CriticStep(critic, torch.optim.Adam(critic.parameters(), lr=1e-3,
                                               betas=(0.0, 0.9)), mode=mode, **kw)


@pytest.mark.parametrize("mode", ["compile", "graph", "compile+graph"])
def test_batchnorm_critic_is_refused_outside_eager(mode):
    with pytest.raises(ValueError, match=r"net\.1 \(BatchNorm1d\).*mode='eager'"):
        _step(BatchNormCritic(), mode)(torch.randn(6, 4), torch.randn(6, 4))


def test_auto_falls_back_to_eager_with_one_warning():
    step = _step(BatchNormCritic(), "auto")
    with pytest.warns(RuntimeWarning, match="runs eager.*BatchNorm1d"):
        step(torch.randn(6, 4), torch.randn(6, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step(torch.randn(6, 4), torch.randn(6, 4))
    assert step.mode == "eager"


def test_auto_runs_eager_on_the_cpu_and_graphs_where_they_can_run():
    """auto: eager on CPU tensors (the compiled steps measured slower there); "graph" where
    graphs can run (here the simulation stands in for CUDA)."""
    cpu = _step(MLPCritic((4,), hidden_dim=3), "auto", simulate_graphs=False)
    cpu(torch.randn(6, 4), torch.randn(6, 4))
    graphed = _step(MLPCritic((4,), hidden_dim=3), "auto")
    graphed(torch.randn(6, 4), torch.randn(6, 4))
    assert (cpu.mode, graphed.mode) == ("eager", "graph")


@pytest.mark.parametrize("mode", ["graph", "compile+graph"])
def test_graph_modes_refuse_cpu_tensors(mode):
    with pytest.raises(ValueError, match="CUDA graphs need CUDA tensors.*'compile'"):
        _step(MLPCritic((4,), 3), mode, simulate_graphs=False)(torch.randn(6, 4),
                                                              torch.randn(6, 4))


def test_graph_mode_refuses_a_scaler_and_an_uncapturable_optimizer():
    critic = MLPCritic((4,), 3)
    scaler = torch.amp.GradScaler("cpu")
    with pytest.raises(ValueError, match="GradScaler"):
        _step(critic, "graph", scaler=scaler)(torch.randn(6, 4), torch.randn(6, 4))
    lbfgs = CriticStep(critic, torch.optim.LBFGS(critic.parameters()), mode="graph",
                       simulate_graphs=True)
    with pytest.raises(ValueError, match="LBFGS.*capturable"):
        lbfgs(torch.randn(6, 4), torch.randn(6, 4))


def test_data_dependent_control_flow_is_reported():
    real, fake = torch.randn(6, 4), torch.randn(6, 4)
    with pytest.raises(RuntimeError, match=r"mode='compile'.*could not trace.*mode='eager'"):
        _step(BranchingCritic(), "compile", compile_options=FAST)(real, fake)


def test_bad_arguments_name_themselves():
    critic = MLPCritic((4,), 3)
    opt = torch.optim.SGD(critic.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="mode must be one of"):
        CriticStep(critic, opt, mode="fast")
    with pytest.raises(ValueError, match="kind must be one of"):
        CriticStep(critic, opt, kind="wgan")
    with pytest.raises(ValueError, match="gp_every must be an int >= 1"):
        CriticStep(critic, opt, gp_every=0)
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer"):
        CriticStep(critic, critic.parameters())
    with pytest.raises(ValueError, match="autocast must be"):
        CriticStep(critic, opt, autocast=torch.float64)
    with pytest.raises(ValueError, match=r"multiple of pac=4"):
        CriticStep(critic, opt, pac=4, mode="eager")(torch.randn(6, 4), torch.randn(6, 4))
    gen, _ = _gan()
    train = TrainStep(CriticStep(critic, opt), GeneratorStep(gen, critic, opt), latent_dim=3,
                      n_critic=2)
    with pytest.raises(ValueError, match="n_critic=2 real batches, got 3"):
        train(torch.randn(3, 6, 4))


# ---------------------------------------------------------------------------------------------
# Mixed precision
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["eager", "compile"])
def test_bf16_autocast_runs_close_to_float32(mode):
    torch.manual_seed(5)
    critic = MLPCritic((4,), hidden_dim=8)
    real, fake = torch.randn(16, 4), torch.randn(16, 4)
    losses = []
    for autocast in (None, torch.bfloat16):
        c = copy.deepcopy(critic)
        step = CriticStep(c, torch.optim.SGD(c.parameters(), lr=0.0), mode=mode,
                          autocast=autocast, compile_options=FAST)
        torch.manual_seed(1)
        losses.append(step(real, fake))
    torch.testing.assert_close(losses[1].loss, losses[0].loss, rtol=2e-2, atol=2e-2)
    assert losses[1].loss.dtype == torch.float32


@pytest.mark.parametrize("mode", ["eager", "compile"])
def test_grad_scaler_steps_match_the_unscaled_step(mode):
    """A GradScaler (here on the CPU, float32) scales the loss and the penalty's input gradient
    and unscales both: the update equals the unscaled one."""
    torch.manual_seed(5)
    critic = MLPCritic((4,), hidden_dim=8)
    real, fake = torch.randn(16, 4), torch.randn(16, 4)
    start = [p.detach().clone() for p in critic.parameters()]
    results = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=1024.0)):
        c = copy.deepcopy(critic)
        step = CriticStep(c, torch.optim.SGD(c.parameters(), lr=0.1), mode=mode,
                          scaler=scaler, compile_options=FAST)
        torch.manual_seed(1)
        assert not step(real, fake).skipped
        results.append(list(c.parameters()))
    assert _max_rel(results[1], results[0], start) < 1e-5
