"""Mixed precision: the penalty with a GradScaler under float16 autocast equals the float32 one,
and the scaler's growth never puts inf or NaN into the parameters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import wgangp_fast


def _critic():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 64), nn.LeakyReLU(0.2), nn.Linear(64, 64),
                         nn.LeakyReLU(0.2), nn.Linear(64, 1))


def _scaler(**kw):
    scaler = torch.amp.GradScaler("cpu", **kw)
    if not scaler.is_enabled():
        pytest.skip("GradScaler is disabled on CPU in this torch")
    return scaler


@pytest.mark.parametrize("init_scale", [2.0 ** 8, 2.0 ** 16])
def test_fp16_penalty_with_scaler_equals_fp32(init_scale):
    critic = _critic()
    real, fake = torch.randn(32, 20), torch.randn(32, 20)
    torch.manual_seed(1)
    p32 = wgangp_fast.gradient_penalty(critic, real, fake)
    p32.backward()
    g32 = [p.grad.clone() for p in critic.parameters() if p.grad is not None]
    critic.zero_grad(set_to_none=True)
    scaler = _scaler(init_scale=init_scale)
    with torch.autocast("cpu", dtype=torch.float16):
        torch.manual_seed(1)
        p16 = wgangp_fast.gradient_penalty(critic, real, fake, scaler=scaler)
    assert torch.isfinite(p16)
    torch.testing.assert_close(p16, p32, rtol=2e-3, atol=2e-3)
    scaler.scale(p16).backward()
    if init_scale > 2.0 ** 8:
        return  # the outer float16 backward may overflow at this scale: scaler.step skips it
    g16 = [p.grad / scaler.get_scale() for p in critic.parameters() if p.grad is not None]
    for a, b in zip(g16, g32):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-3)


def test_scaler_growth_never_reaches_the_parameters():
    critic = _critic()
    opt = torch.optim.Adam(critic.parameters(), lr=1e-3, betas=(0.0, 0.9))
    # The scale doubles every step until the float16 backward overflows; those steps must be
    # skipped by the scaler, never applied.
    scaler = _scaler(init_scale=2.0 ** 12, growth_interval=1)
    skipped = 0
    for step in range(30):
        torch.manual_seed(100 + step)
        real, fake = torch.randn(32, 20) + 1.0, torch.randn(32, 20)
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.float16):
            loss = -(critic(real).float().mean() - critic(fake).float().mean())
            gp = wgangp_fast.gradient_penalty(critic, real, fake, scaler=scaler)
        scale_before = scaler.get_scale()
        scaler.scale(loss + gp).backward()
        scaler.step(opt)
        scaler.update()
        if scaler.get_scale() < scale_before:
            skipped += 1
        else:
            assert torch.isfinite(gp), f"step {step}: a non-finite penalty was not skipped"
        for p in critic.parameters():
            assert torch.isfinite(p).all(), f"step {step}: non-finite parameter"
    assert skipped >= 1, "the scale never reached overflow: the test did not exercise growth"
    assert scaler.get_scale() < 2.0 ** 30
