"""Conditional iterations through TrainStep: labels travel with their real batch, the fakes are
drawn for the same labels row by row, so the penalty interpolates samples of one class; the
same in every mode."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from wgangp_fast.steps import CriticStep, GeneratorStep, TrainStep

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = {"backend": "aot_eager"}


class LabelledGenerator(nn.Module):
    """G(z, y) = y + 0.25 + 0.01 tanh(W z) in every coordinate: a sample says its class."""

    def __init__(self, latent=3, dim=4):
        super().__init__()
        self.w = nn.Linear(latent, dim)

    def forward(self, z, y):
        return y[:, None].to(z.dtype) + 0.25 + 0.01 * torch.tanh(self.w(z))


class SpyCritic(nn.Module):
    """A critic that checks, in eager mode, that every input row lies within [y, y + 0.3] of
    the label it is given: real rows (= y), fakes drawn for y, and their interpolates."""

    def __init__(self, dim=4, classes=3, check=True):
        super().__init__()
        self.fc = nn.Linear(dim, 1)
        self.emb = nn.Embedding(classes, dim)
        self.check = check
        self.calls = 0

    def forward(self, x, y):
        if self.check:
            off = x - y[:, None].to(x.dtype)
            assert off.min() >= -1e-6 and off.max() <= 0.3, "a row met another class's label"
            self.calls += 1
        return self.fc(x) + (self.emb(y) * x).sum(1, keepdim=True)


def _batches(n_critic=3, batch=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = [torch.randint(3, (batch,), generator=g) for _ in range(n_critic)]
    reals = [y[:, None].float().expand(-1, 4).clone() for y in labels]
    return reals, labels, torch.randint(3, (batch,), generator=g)


def _train_step(gen, critic, mode, **kw):
    step_opts = {"compile_options": FAST} if mode == "compile" else {}
    if mode == "graph":
        step_opts["simulate_graphs"] = True
    c = CriticStep(critic, torch.optim.Adam(critic.parameters(), 1e-2), mode=mode, **step_opts)
    g = GeneratorStep(gen, critic, torch.optim.Adam(gen.parameters(), 1e-2), mode=mode,
                      conditional=True, **step_opts)
    return TrainStep(c, g, latent_dim=3, n_critic=3, **kw)


def test_labels_travel_with_their_batch_and_the_penalty_stays_in_one_class():
    torch.manual_seed(0)
    gen, critic = LabelledGenerator(), SpyCritic()
    train = _train_step(gen, critic, "eager")
    for seed in range(3):
        reals, labels, gen_labels = _batches(seed=seed)
        stats = train(reals, labels, gen_labels)
        assert stats.critic.penalty is not None and torch.isfinite(stats.loss_g)
    # per iteration: 3 critic steps x (real, fake, interpolates) + 1 generator step
    assert critic.calls == 3 * 10
    # the spy does catch a mismatch: fakes drawn for other labels than the real batch's
    reals, labels, _ = _batches()
    fake = gen(torch.randn(6, 3), (labels[0] + 1) % 3).detach()
    with pytest.raises(AssertionError, match="another class"):
        CriticStep(critic, torch.optim.SGD(critic.parameters(), 0.1), mode="eager")(
            reals[0], fake, labels[0])


@pytest.mark.parametrize("mode", ["compile", "graph"])
def test_every_mode_gives_the_eager_conditional_iteration(mode):
    torch.manual_seed(1)
    gen0, critic0 = LabelledGenerator(), SpyCritic(check=False)
    runs = {}
    for m in ("eager", mode):
        gen, critic = copy.deepcopy(gen0), copy.deepcopy(critic0)
        train = _train_step(gen, critic, m, warmup=1) if m == "graph" else _train_step(gen, critic, m)
        torch.manual_seed(5)
        for seed in range(4):
            train(*_batches(seed=seed))
        runs[m] = [p.detach().clone() for p in list(gen.parameters()) + list(critic.parameters())]
        if m == "graph":
            assert train.captures >= 1
    for a, b in zip(runs["eager"], runs[mode]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_bad_labels_are_refused_by_name():
    train = _train_step(LabelledGenerator(), SpyCritic(), "eager")
    reals, labels, gen_labels = _batches()
    with pytest.raises(ValueError, match="needs both labels .* and generator_labels"):
        train(reals, labels)
    with pytest.raises(ValueError, match="labels must hold n_critic=3 label batches, got 2"):
        train(reals, labels[:2], gen_labels)
    with pytest.raises(ValueError, match=r"labels\[1\] must hold one label per sample"):
        train(reals, [labels[0], labels[1][:4], labels[2]], gen_labels)
    with pytest.raises(ValueError, match="generator_labels must hold one label per generated"):
        train(reals, labels, torch.tensor(1))


def test_an_unconditional_generator_step_ignores_the_critic_inputs():
    """GeneratorStep without conditional=True keeps calling G(z), the critic D(G(z), *inputs)."""
    gen = nn.Linear(3, 4)
    critic = SpyCritic(check=False)
    step = GeneratorStep(gen, critic, torch.optim.SGD(gen.parameters(), 0.1), mode="eager")
    loss = step(torch.randn(5, 3), torch.zeros(5, dtype=torch.long))
    assert torch.isfinite(loss)
    with pytest.raises(TypeError, match="must be a bool"):
        GeneratorStep(gen, critic, torch.optim.SGD(gen.parameters(), 0.1), conditional=1)
