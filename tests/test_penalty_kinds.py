"""R1, R2, WGAN-LP and DRAGAN through the fused ops equal their plain-autograd versions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import wgangp_fast
from wgangp_fast.testing import dragan_penalty, lp_penalty, r1_penalty


def _critic():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 1)).double()


def _grads(m):
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in m.parameters()]


def _compare(fused, plain, critic):
    critic.zero_grad(set_to_none=True)
    torch.manual_seed(11)
    a = fused()
    a.backward()
    ga = _grads(critic)
    critic.zero_grad(set_to_none=True)
    torch.manual_seed(11)
    b = plain()
    b.backward()
    torch.testing.assert_close(a, b)
    for x, y in zip(ga, _grads(critic)):
        torch.testing.assert_close(x, y)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_r1_and_r2(backend):
    critic = _critic()
    real = torch.randn(6, 3, 4, dtype=torch.float64)
    fake = torch.randn(6, 3, 4, dtype=torch.float64)
    _compare(lambda: wgangp_fast.gradient_penalty(critic, real, fake, kind="r1", lambda_gp=4.0,
                                                  backend=backend),
             lambda: r1_penalty(critic, real, gamma=4.0), critic)
    _compare(lambda: wgangp_fast.gradient_penalty(critic, None, fake, kind="r2", lambda_gp=4.0,
                                                  backend=backend),
             lambda: r1_penalty(critic, fake, gamma=4.0), critic)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_wgan_lp(backend):
    critic = _critic()
    # Large inputs give gradient norms on both sides of 1, so the clip matters.
    real = 3 * torch.randn(8, 12, dtype=torch.float64)
    fake = torch.randn(8, 12, dtype=torch.float64)
    _compare(lambda: wgangp_fast.gradient_penalty(critic, real, fake, kind="wgan-lp",
                                                  backend=backend),
             lambda: lp_penalty(critic, real, fake), critic)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_dragan(backend):
    critic = _critic()
    real = torch.randn(5, 12, dtype=torch.float64)
    _compare(lambda: wgangp_fast.gradient_penalty(critic, real, None, kind="dragan",
                                                  lambda_gp=10.0, backend=backend),
             lambda: dragan_penalty(critic, real, lambda_gp=10.0), critic)


def test_unknown_kind_and_missing_samples():
    critic = _critic()
    x = torch.randn(4, 12, dtype=torch.float64)
    with pytest.raises(ValueError, match="kind must be one of"):
        wgangp_fast.gradient_penalty(critic, x, x, kind="r3")
    with pytest.raises(TypeError, match="fake"):
        wgangp_fast.gradient_penalty(critic, x, None, kind="wgan-gp")
    with pytest.raises(TypeError, match="real"):
        wgangp_fast.gradient_penalty(critic, None, x, kind="r1")
