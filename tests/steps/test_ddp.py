"""DistributedDataParallel models in the step classes, on the CPU with 2 gloo ranks: each rank
steps on its half of a batch, and the weights after two critic steps and a generator step equal
a plain-autograd double-backward computation of the rank-averaged gradients (float64, 1e-10), in
eager mode (its two backward calls, averaged after both) and in compile mode. The graph modes with NCCL run on
a GPU (`make gpu-check`)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed
from torch.nn.parallel import DistributedDataParallel

from wgangp_fast.steps import CriticStep, GeneratorStep
from wgangp_fast.train.models import MLPCritic, MLPGenerator

from .. import ranks as ranks_mod

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="torch.distributed is not available")

WORLD, HALF, DIM, LATENT, LR = 2, 4, 3, 2, 0.05
CASES = {"eager": {"mode": "eager"},
         "compile": {"mode": "compile", "compile_options": {"backend": "aot_eager"}}}
SPAWN_TIMEOUT_S = 180


def _models():
    torch.manual_seed(0)
    critic = MLPCritic((DIM,), hidden_dim=3).double()
    generator = MLPGenerator(LATENT, 5, (DIM,), output_activation=None,
                             batch_norm=False).double()
    with torch.no_grad():  # weights of scale 0.5: from the N(0, 0.02) init a step barely moves
        for p in (*critic.parameters(), *generator.parameters()):
            p.normal_(0.0, 0.5)
    return critic, generator


def _data():
    """The whole batch of both ranks: real, fake, one alpha per sample per step, noise."""
    g = torch.Generator().manual_seed(1)
    n = WORLD * HALF
    real = torch.randn(n, DIM, generator=g, dtype=torch.float64)
    fake = torch.randn(n, DIM, generator=g, dtype=torch.float64)
    alphas = torch.rand(2, n, generator=g, dtype=torch.float64)
    z = torch.randn(n, LATENT, generator=g, dtype=torch.float64)
    return real, fake, alphas, z


def _flat(module):
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def _worker(rank: int, folder: str) -> None:
    ranks_mod.init_group(rank, WORLD, folder)
    out = {}
    try:
        real, fake, alphas, z = _data()
        rows = slice(rank * HALF, (rank + 1) * HALF)
        for name, options in CASES.items():
            critic, generator = _models()
            ddp_c, ddp_g = DistributedDataParallel(critic), DistributedDataParallel(generator)
            draws = iter(alphas[:, rows])
            step = CriticStep(ddp_c, torch.optim.SGD(critic.parameters(), lr=LR),
                              alpha_fn=lambda m, like, d=draws: next(d), **options)
            for _ in range(2):
                step(real[rows], fake[rows])
            gen_step = GeneratorStep(ddp_g, ddp_c, torch.optim.SGD(generator.parameters(), lr=LR),
                                     **options)
            gen_step(z[rows])
            out[name] = (_flat(critic), _flat(generator))
    finally:
        torch.distributed.destroy_process_group()
    torch.save(out, os.path.join(folder, f"rank{rank}.pt"))


def _reference():
    """Plain autograd on each half, the gradients averaged, SGD steps."""
    real, fake, alphas, z = _data()
    critic, generator = _models()
    halves = [slice(r * HALF, (r + 1) * HALF) for r in range(WORLD)]
    for alpha in alphas:
        grads = []
        for rows in halves:
            critic.zero_grad(set_to_none=True)
            a = alpha[rows].reshape(-1, 1)
            x = (a * real[rows] + (1 - a) * fake[rows]).requires_grad_(True)
            out = critic(x)
            (g,) = torch.autograd.grad(out, x, torch.ones_like(out), create_graph=True)
            pen = 10.0 * ((g.norm(2, dim=1) - 1) ** 2).mean()
            loss = critic(fake[rows]).mean() - critic(real[rows]).mean() + pen
            loss.backward()
            grads.append([p.grad.clone() for p in critic.parameters()])
        with torch.no_grad():
            for i, p in enumerate(critic.parameters()):
                p -= LR * (grads[0][i] + grads[1][i]) / WORLD
    grads = []
    for rows in halves:
        generator.zero_grad(set_to_none=True)
        (-critic(generator(z[rows])).mean()).backward()
        grads.append([p.grad.clone() for p in generator.parameters()])
    with torch.no_grad():
        for i, p in enumerate(generator.parameters()):
            p -= LR * (grads[0][i] + grads[1][i]) / WORLD
    return _flat(critic), _flat(generator)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return ranks_mod.spawn(_worker, WORLD, str(tmp_path_factory.mktemp("ddp_steps")),
                           SPAWN_TIMEOUT_S)


@pytest.mark.parametrize("case", list(CASES))
def test_ddp_steps_equal_the_rank_averaged_plain_autograd_steps(ranks, case):
    want_c, want_g = _reference()
    start_c, start_g = (_flat(m) for m in _models())
    for r in range(WORLD):
        got_c, got_g = ranks[r][case]
        assert (got_c - want_c).abs().max().item() <= 1e-10
        assert (got_g - want_g).abs().max().item() <= 1e-10
        # (without the averaging each rank would hold its own half's update instead)
        assert (got_c - start_c).abs().max() > 1e-5 and (got_g - start_g).abs().max() > 1e-5
    assert torch.equal(ranks[0][case][0], ranks[1][case][0])
