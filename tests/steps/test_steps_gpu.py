"""The whole-step modes on a GPU: CUDA-graph capture and replay of CriticStep, GeneratorStep and
TrainStep (static buffers, graph-safe RNG, capturable Adam with a held lr, re-capture per
input signature), compile+graph, and the refusals only a capture can show. Skipped without a
CUDA device; `make gpu-check` runs them.

WGANGP_FAST_GPU_TESTS_DRY_RUN=1 runs them on the CPU with the graph modes simulated (a replay
re-runs the step; torch.compile through aot_eager), which checks the tests themselves before a
GPU session (`make test` does); what only a real capture shows is skipped there."""

from __future__ import annotations

import copy
import math
import os
import warnings

import pytest
import torch
from torch import nn

from wgangp_fast import steps
from wgangp_fast.steps import CriticStep, GeneratorStep, TrainStep
from wgangp_fast.train.models import MLPCritic, MLPGenerator, PacCritic

DRY_RUN = os.environ.get("WGANGP_FAST_GPU_TESTS_DRY_RUN") == "1"
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not (DRY_RUN or torch.cuda.is_available()),
                                 reason="needs a CUDA device")]
DEVICE = torch.device("cpu" if DRY_RUN else "cuda")
GRAPHS = ["graph", "compile+graph"]
real_capture_only = pytest.mark.skipif(DRY_RUN, reason="the CPU simulation captures nothing")


# every step of the dry run: graphs simulated, torch.compile through aot_eager
DRY = {"simulate_graphs": True, "compile_options": {"backend": "aot_eager"}} if DRY_RUN else {}


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _critic(seed=0, dropout=False):
    torch.manual_seed(seed)
    if dropout:
        return PacCritic(6, pac=2, hidden=(16, 16), dropout=0.5).to(DEVICE)
    return MLPCritic((6,), hidden_dim=8).to(DEVICE)


def _adam(module, lr=1e-3):
    return torch.optim.Adam(module.parameters(), lr=lr, betas=(0.0, 0.9))


def _run(mode, critic, real, fake, calls, kind="wgan-gp", schedule=None, **kw):
    c = copy.deepcopy(critic)
    opt = _adam(c)
    step = CriticStep(c, opt, mode=mode, kind=kind, pac=kw.pop("pac", 1), **kw, **DRY)
    out = []
    for k in range(calls):
        if schedule is not None:
            opt.param_groups[0]["lr"] = schedule(k)
        out.append(step(real, fake))
    _sync()
    return c, step, out


@pytest.mark.parametrize("mode", GRAPHS)
def test_graphed_r1_steps_equal_eager_ones(mode):
    """R1 draws nothing at random, so replays must follow the eager steps: 8 calls (3 warm-up,
    a capture, 4 replays) with an lr changed before each, one capture, the same weights."""
    critic = _critic()
    real = torch.randn(16, 6, device=DEVICE)
    fake = torch.randn(16, 6, device=DEVICE)
    schedule = lambda k: 1e-3 * (1 - k / 10)  # noqa: E731
    eager, _, ref = _run("eager", critic, real, fake, 8, kind="r1", schedule=schedule)
    graphed, step, got = _run(mode, critic, real, fake, 8, kind="r1", schedule=schedule)
    assert step.captures == 1
    for a, b in zip(ref, got):
        torch.testing.assert_close(a.loss, b.loss, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(a.penalty, b.penalty, rtol=1e-4, atol=1e-5)
    for p, q in zip(eager.parameters(), graphed.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("mode", GRAPHS)
def test_replays_draw_fresh_uniform_alphas(mode):
    """The alphas recovered from the norms (D = s/2 ||x||^2, real = 0) over 40 replays: fresh
    at every call and uniform on [0, 1)."""
    from scipy import stats as scipy_stats

    class Square(nn.Module):
        def __init__(self):
            super().__init__()
            self.s = nn.Parameter(torch.ones(()))

        def forward(self, x):
            return 0.5 * self.s * x.square().sum(1, keepdim=True)

    critic = Square().to(DEVICE)
    step = CriticStep(critic, torch.optim.SGD(critic.parameters(), lr=0.0), mode=mode,
                      return_norms=True, **DRY)
    real = torch.zeros(64, 3, device=DEVICE)
    fake = torch.ones(64, 3, device=DEVICE) / math.sqrt(3)
    draws = [1 - step(real, fake).norms for _ in range(44)][4:]
    assert step.captures == 1
    for a, b in zip(draws, draws[1:]):
        assert not torch.equal(a, b)
    alphas = torch.cat(draws).double().cpu().numpy()
    assert alphas.min() >= 0 and alphas.max() < 1
    assert scipy_stats.kstest(alphas, "uniform").pvalue > 1e-3


@pytest.mark.parametrize("mode", GRAPHS)
def test_dropout_critic_trains_in_graphs_like_eager(mode):
    """CTGAN's critic with dropout: the captured step's losses match eager's in distribution
    (different masks), and its penalty stays finite, over 30 steps from the same weights."""
    critic = _critic(dropout=True)
    real = torch.randn(32, 6, device=DEVICE)
    fake = torch.randn(32, 6, device=DEVICE)
    _, _, ref = _run("eager", critic, real, fake, 30, pac=2)
    _, step, got = _run(mode, critic, real, fake, 30, pac=2)
    assert step.captures == 1
    ref_w = torch.stack([s.wasserstein for s in ref[4:]])
    got_w = torch.stack([s.wasserstein for s in got[4:]])
    assert torch.isfinite(torch.stack([s.penalty for s in got])).all()
    assert abs(ref_w.mean() - got_w.mean()) < 4 * (ref_w.std() + got_w.std()) + 1e-3


def test_labelled_critic_and_new_shapes_capture_once_each():
    class Labelled(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.embed, self.out = nn.Linear(6, 8), nn.Embedding(3, 8), nn.Linear(8, 1)

        def forward(self, x, labels):
            return self.out(torch.relu(self.fc(x) + self.embed(labels)))

    torch.manual_seed(0)
    critic = Labelled().to(DEVICE)
    step = CriticStep(critic, _adam(critic), mode="graph", warmup=1, max_graphs=2, **DRY)
    for n in (8, 8, 8, 16, 16, 16):
        labels = torch.randint(0, 3, (n,), device=DEVICE)
        stats = step(torch.randn(n, 6, device=DEVICE), torch.randn(n, 6, device=DEVICE), labels)
        assert torch.isfinite(stats.loss)
    assert step.captures == 2
    with pytest.raises(ValueError, match="new input signature"):
        for _ in range(2):
            step(torch.randn(4, 6, device=DEVICE), torch.randn(4, 6, device=DEVICE),
                 torch.zeros(4, dtype=torch.long, device=DEVICE))


def test_bf16_autocast_in_a_graph():
    critic = _critic()
    real = torch.randn(16, 6, device=DEVICE)
    fake = torch.randn(16, 6, device=DEVICE)
    _, _, ref = _run("eager", critic, real, fake, 6, kind="r1", autocast=torch.bfloat16)
    _, step, got = _run("graph", critic, real, fake, 6, kind="r1", autocast=torch.bfloat16)
    assert step.captures == 1
    for a, b in zip(ref, got):
        torch.testing.assert_close(a.loss, b.loss, rtol=2e-2, atol=2e-3)


@pytest.mark.parametrize("mode", GRAPHS)
def test_train_step_is_one_graph_per_iteration(mode):
    """Five critic steps (gp_every 2: the penalty pattern alternates between iterations) and a
    generator step with BatchNorm per replay; noise drawn inside the graph."""
    torch.manual_seed(0)
    gen = MLPGenerator(4, 8, (6,), output_activation=None).to(DEVICE)
    critic = _critic()
    before = [p.detach().clone() for p in (*gen.parameters(), *critic.parameters())]
    train = TrainStep(CriticStep(critic, _adam(critic), mode=mode, gp_every=2, **DRY),
                      GeneratorStep(gen, critic, _adam(gen), mode=mode, **DRY),
                      latent_dim=4, n_critic=5)
    reals = torch.randn(5, 16, 6, device=DEVICE)
    out = [train(reals) for _ in range(10)]
    _sync()
    assert train.captures == 2  # the two penalty patterns of gp_every 2 over 5 steps
    assert all(torch.isfinite(s.loss_g) and torch.isfinite(s.critic.loss) for s in out)
    assert all(s.critic.penalty is not None for s in out)
    after = [p.detach() for p in (*gen.parameters(), *critic.parameters())]
    # every weight moved (a critic's last bias gets no gradient: E[D(real)] - E[D(fake)] and the
    # input gradient do not depend on it)
    assert all(not torch.equal(a, b) for a, b in zip(before, after) if a.dim() > 1)
    # running statistics of the generator's BatchNorm moved inside the replays
    assert gen.net[1].num_batches_tracked.item() == 10 * 6


@real_capture_only
def test_a_step_that_synchronises_is_refused_or_falls_back():
    class Syncing(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 1)

        def forward(self, x):
            return self.fc(x) * (2.0 if x.sum().item() > 0 else 1.0)

    torch.manual_seed(0)
    real = torch.randn(8, 6, device=DEVICE)
    fake = torch.randn(8, 6, device=DEVICE)
    critic = Syncing().to(DEVICE)
    strict = CriticStep(critic, _adam(critic), mode="graph", warmup=1, **DRY)
    strict(real, fake)
    with pytest.raises(RuntimeError, match="could not be captured in a CUDA graph"):
        strict(real, fake)
    critic = Syncing().to(DEVICE)
    lenient = CriticStep(critic, _adam(critic), mode="auto", warmup=1, **DRY)
    lenient(real, fake)
    with pytest.warns(RuntimeWarning, match="runs eager: the step could not be captured"):
        stats = lenient(real, fake)
    assert lenient.mode == "eager" and torch.isfinite(stats.loss)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lenient(real, fake)


def test_auto_takes_graph_on_cuda():
    critic = _critic()
    step = CriticStep(critic, _adam(critic), **DRY)
    step(torch.randn(8, 6, device=DEVICE), torch.randn(8, 6, device=DEVICE))
    assert step.mode == "graph"
    assert steps.choose_mode("auto", DEVICE, critic, simulate_graphs=DRY_RUN)[0] == "graph"


def test_trainer_runs_graph_mode_on_cuda(tmp_path):
    from wgangp_fast.train import WGANGPConfig, WGANGPTrainer

    cfg = WGANGPConfig.for_dataset("ring8", steps=12, batch_size=32, hidden_dim=8, latent_dim=2,
                                   n_critic=2, device=DEVICE.type, n_eval_samples=200,
                                   step_mode="graph", out_dir=str(tmp_path))
    t = WGANGPTrainer(cfg, step_options=DRY)
    t.train()
    assert t.step_mode == "graph" and t.train_iteration.captures >= 1
    assert all(map(math.isfinite, t.history["wasserstein"]))
    state = WGANGPTrainer.read_checkpoint(str(tmp_path / "checkpoint.pt"))
    assert all(isinstance(g["lr"], float) for g in state["optimizer_c"]["param_groups"])
