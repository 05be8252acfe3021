"""What the step classes do with the inputs and codes they meet: a float64 default dtype in
compile mode, a code's own alpha draw (alpha_fn) in every mode, critics that return something
other than a tensor of floating-point scores, and a batch of one through a BatchNorm generator."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from wgangp_fast.steps import CriticStep, GeneratorStep, TrainStep
from wgangp_fast.train.models import MLPCritic, MLPGenerator

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = {"backend": "aot_eager"}


@pytest.fixture
def float64_default():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def test_compile_mode_under_a_float64_default_dtype(float64_default):
    """How float64 training scripts run. Inductor (not aot_eager: the fault was in its lowering of
    a dtype-less torch.rand, which drew float32 alphas) gives eager's step."""
    torch.manual_seed(0)
    critic = MLPCritic((3,), hidden_dim=4)
    real, fake = torch.randn(8, 3), torch.randn(8, 3)
    assert real.dtype == torch.float64
    out = {}
    for mode in ("eager", "compile"):
        c = copy.deepcopy(critic)
        step = CriticStep(c, torch.optim.SGD(c.parameters(), lr=0.1), kind="r1", mode=mode)
        stats = step(real, fake)
        out[mode] = (stats, [p.detach().clone() for p in c.parameters()])
    torch.testing.assert_close(out["compile"][0].loss, out["eager"][0].loss, rtol=1e-10,
                               atol=1e-12)
    for a, b in zip(out["compile"][1], out["eager"][1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # and the interpolates' alpha, drawn inside the compiled step, is a float64 draw
    c = copy.deepcopy(critic)
    CriticStep(c, torch.optim.SGD(c.parameters(), lr=0.1), mode="compile")(real, fake)


def _numpy_alpha(m, like):
    """The alpha of codes that draw with numpy: np.random.random((B, 1)) as a tensor."""
    return torch.from_numpy(np.random.random((m, 1))).to(like)


def _reference(critic, real, fake, alpha, lr=0.1, lambda_gp=10.0):
    """One plain-autograd WGAN-GP step with the given per-sample alpha (SGD)."""
    a = alpha.reshape(-1, 1)
    x = (a * real + (1 - a) * fake).requires_grad_(True)
    out = critic(x)
    (g,) = torch.autograd.grad(out, x, torch.ones_like(out), create_graph=True)
    pen = lambda_gp * ((g.norm(2, dim=1) - 1) ** 2).mean()
    loss = critic(fake).mean() - critic(real).mean() + pen
    critic.zero_grad(set_to_none=True)
    loss.backward()
    with torch.no_grad():
        for p in critic.parameters():
            p -= lr * p.grad
    return pen.detach()


@pytest.mark.parametrize("mode", ["eager", "compile", "graph"])
def test_alpha_fn_reproduces_a_codes_own_draw_in_every_mode(mode):
    """numpy's draws, three steps: the same penalties and weights as the code with its own
    alpha (float64, 1e-10); alpha_fn is called once per regularised step."""
    torch.manual_seed(1)
    critic = MLPCritic((3,), hidden_dim=4).double()
    real = torch.randn(6, 3, dtype=torch.float64)
    fake = torch.randn(6, 3, dtype=torch.float64)
    ours, theirs = copy.deepcopy(critic), copy.deepcopy(critic)
    calls = []

    def alpha_fn(m, like):
        calls.append(m)
        return _numpy_alpha(m, like)

    step = CriticStep(ours, torch.optim.SGD(ours.parameters(), lr=0.1), mode=mode,
                      alpha_fn=alpha_fn, warmup=1, compile_options=FAST,
                      simulate_graphs=mode == "graph")
    np.random.seed(7)
    got = [step(real, fake).penalty for _ in range(3)]
    np.random.seed(7)
    want = [_reference(theirs, real, fake, torch.from_numpy(np.random.random((6, 1))))
            for _ in range(3)]
    assert calls == [6, 6, 6]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        assert (p - q).abs().max().item() <= 1e-10


def test_alpha_fn_in_a_train_step_and_its_errors():
    """In eager mode the draw comes where the code draws it: after D(real) and D(fake)."""
    torch.manual_seed(2)
    gen = MLPGenerator(2, 4, (3,), output_activation=None, batch_norm=False)
    critic = MLPCritic((3,), hidden_dim=4)
    events = []
    critic.register_forward_pre_hook(lambda module, args: events.append("D"))
    train = TrainStep(
        CriticStep(critic, torch.optim.SGD(critic.parameters(), lr=0.1), gp_every=2,
                   alpha_fn=lambda m, like: events.append(m) or torch.rand(m, 1).to(like),
                   mode="eager"),
        GeneratorStep(gen, critic, torch.optim.SGD(gen.parameters(), lr=0.1), mode="eager"),
        latent_dim=2, n_critic=3)
    train(torch.randn(3, 4, 3))
    # steps 0 and 2 of gp_every 2 carry the penalty; the last D scores the generator's fakes
    assert events == ["D", "D", 4, "D", "D", "D", "D", "D", 4, "D", "D"]
    with pytest.raises(TypeError, match="alpha_fn must be callable"):
        CriticStep(critic, torch.optim.SGD(critic.parameters(), lr=0.1), alpha_fn=3)
    with pytest.raises(ValueError, match="alpha_fn draws interpolation weights.*'r1'"):
        CriticStep(critic, torch.optim.SGD(critic.parameters(), lr=0.1), kind="r1",
                   alpha_fn=_numpy_alpha)
    bad = CriticStep(critic, torch.optim.SGD(critic.parameters(), lr=0.1), mode="eager",
                     alpha_fn=lambda m, like: torch.rand(m + 1))
    with pytest.raises(ValueError, match="the tensor alpha_fn returned must hold M=4 values"):
        bad(torch.randn(4, 3), torch.randn(4, 3))


class Returns(nn.Module):
    def __init__(self, what):
        super().__init__()
        self.fc, self.what = nn.Linear(3, 1), what

    def forward(self, x):
        y = self.fc(x)
        return {"list": [y], "nested": [[y]], "none": None, "int": (y > 0).long(),
                "dict": {"score": y}}[self.what]


@pytest.mark.parametrize("mode", ["eager", "compile"])
@pytest.mark.parametrize("what, message", [
    ("nested", "critic must return a Tensor of scores .* got a list whose first element is a "
               "list"),
    ("none", "critic must return a Tensor of scores .* got NoneType"),
    ("dict", "critic must return a Tensor of scores .* got dict"),
    ("int", "critic must return floating-point scores, got a torch.int64 tensor"),
])
def test_a_critic_that_returns_no_float_scores_is_named(what, message, mode):
    critic = Returns(what)
    step = CriticStep(critic, torch.optim.SGD(critic.parameters(), lr=0.1), mode=mode,
                      compile_options=FAST)
    with pytest.raises(TypeError, match=message):
        step(torch.randn(4, 3), torch.randn(4, 3))
    gen = MLPGenerator(2, 4, (3,), output_activation=None, batch_norm=False)
    g_step = GeneratorStep(gen, critic, torch.optim.SGD(gen.parameters(), lr=0.1), mode=mode,
                           compile_options=FAST)
    with pytest.raises(TypeError, match=message):
        g_step(torch.randn(4, 2))


def test_a_critic_returning_a_list_of_scores_trains():
    critic = Returns("list")
    stats = CriticStep(critic, torch.optim.SGD(critic.parameters(), lr=0.1),
                       mode="eager")(torch.randn(4, 3), torch.randn(4, 3))
    assert torch.isfinite(stats.loss)


def test_a_batch_of_one_through_a_batchnorm_generator_is_refused_by_name():
    torch.manual_seed(3)
    gen = MLPGenerator(2, 4, (3,), output_activation=None, batch_norm=True)
    critic = MLPCritic((3,), hidden_dim=4)
    g_step = GeneratorStep(gen, critic, torch.optim.SGD(gen.parameters(), lr=0.1))
    with pytest.raises(ValueError, match=r"GeneratorStep: a batch of 1 .*generator's BatchNorm "
                                         r"layers.*net\.1 \(BatchNorm1d\).*at least 2"):
        g_step(torch.randn(1, 2))
    train = TrainStep(CriticStep(critic, torch.optim.SGD(critic.parameters(), lr=0.1)), g_step,
                      latent_dim=2, n_critic=1)
    with pytest.raises(ValueError, match="a batch of 1"):
        train(torch.randn(1, 1, 3))
    g_step(torch.randn(2, 2))  # two samples are fine
    gen.eval()
    g_step(torch.randn(1, 2))  # and so is evaluation mode, which uses the running statistics
