"""The drop-in: same penalty and same parameter gradients as the seed code it replaces."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import wgangp_fast
from wgangp_fast.testing import (
    autograd_interpolate,
    ctgan_gradient_penalty,
    per_sample_gradient_penalty,
)


class Packed(nn.Module):
    def __init__(self, d, pac):
        super().__init__()
        self.pac, self.d = pac, d
        self.net = nn.Sequential(nn.Linear(d * pac, 32), nn.LeakyReLU(0.2), nn.Linear(32, 32),
                                 nn.LeakyReLU(0.2), nn.Linear(32, 1))

    def forward(self, x):
        return self.net(x.view(-1, self.pac * self.d))


class ConvLN(nn.Module):
    """Seed 003's critic shape in miniature: conv, LayerNorm, no sigmoid."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),
                                 nn.Conv2d(4, 8, 4, 2, 1), nn.LayerNorm([8, 2, 2]),
                                 nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(8, 1, 2, 1, 0))

    def forward(self, x):
        return self.net(x).view(-1, 1)


def _grads(module):
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in module.parameters()]


def _zero(module):
    for p in module.parameters():
        p.grad = None


BACKENDS = [b for b in ("cpu", "reference") if b in wgangp_fast.available_backends()]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("pac", [1, 10])
def test_calc_gradient_penalty_equals_ctgan(backend, dtype, pac):
    torch.manual_seed(0)
    critic = Packed(6, pac).to(dtype)
    gen = nn.Linear(4, 6).to(dtype)
    real = torch.randn(40, 6, dtype=dtype)
    fake = gen(torch.randn(40, 4, dtype=dtype))  # not detached, as in CTGAN's fit

    torch.manual_seed(1)
    want = ctgan_gradient_penalty(critic, real, fake, "cpu", pac=pac, lambda_=10)
    want.backward(retain_graph=True)
    want_c, want_g = _grads(critic), _grads(gen)
    _zero(critic)
    _zero(gen)

    torch.manual_seed(1)
    got = wgangp_fast.calc_gradient_penalty(critic, real, fake, "cpu", pac=pac, lambda_=10,
                                            backend=backend)
    got.backward()
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-12}
    torch.testing.assert_close(got, want, **tol)
    for a, b in zip(_grads(critic) + _grads(gen), want_c + want_g):
        torch.testing.assert_close(a, b, **tol)
    # The RNG was consumed exactly as the seed code consumes it.
    torch.manual_seed(1)
    ctgan_gradient_penalty(critic, real, fake, "cpu", pac=pac)
    after_ref = torch.rand(3)
    torch.manual_seed(1)
    wgangp_fast.calc_gradient_penalty(critic, real, fake, "cpu", pac=pac, backend=backend)
    assert torch.equal(torch.rand(3), after_ref)


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_sample_drop_in_on_a_conv_critic(backend):
    torch.manual_seed(0)
    critic = ConvLN()
    real, fake = torch.randn(8, 1, 8, 8), torch.randn(8, 1, 8, 8)
    torch.manual_seed(5)
    want = per_sample_gradient_penalty(critic, real, fake, lambda_gp=10.0)
    want.backward()
    want_c = _grads(critic)
    _zero(critic)
    torch.manual_seed(5)
    got = wgangp_fast.gradient_penalty(critic, real, fake, lambda_gp=10.0, backend=backend)
    got.backward()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for a, b in zip(_grads(critic), want_c):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_separate_backward_calls_equal_one_backward_of_the_sum():
    torch.manual_seed(0)
    critic = Packed(5, 2)
    real, fake = torch.randn(10, 5), torch.randn(10, 5)

    def losses():
        torch.manual_seed(3)
        loss_d = -(critic(real).mean() - critic(fake).mean())
        pen = wgangp_fast.gradient_penalty(critic, real, fake, pac=2)
        return loss_d, pen

    loss_d, pen = losses()
    pen.backward(retain_graph=True)
    loss_d.backward()
    separate = _grads(critic)
    _zero(critic)
    loss_d, pen = losses()
    (loss_d + pen).backward()
    for a, b in zip(_grads(critic), separate):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_tuple_outputs_and_conditioning_inputs():
    torch.manual_seed(0)

    class Conditional(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(5 + 3, 1)

        def forward(self, x, cond):
            out = self.body(torch.cat([x, cond], 1))
            return out, {"features": x}

    critic = Conditional()
    real, fake, cond = torch.randn(6, 5), torch.randn(6, 5), torch.randn(6, 3)
    torch.manual_seed(1)
    got = wgangp_fast.gradient_penalty(critic, real, fake, cond, lambda_gp=2.0)
    torch.manual_seed(1)
    want = per_sample_gradient_penalty(lambda x, c: critic(x, c)[0], real, fake, cond,
                                         lambda_gp=2.0)
    torch.testing.assert_close(got, want)


def test_grad_scaler_is_folded_into_input_scale():
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 14)
    if not scaler.is_enabled():
        pytest.skip("GradScaler is disabled on this device")
    torch.manual_seed(0)
    critic = Packed(7, 1)
    real, fake = torch.randn(8, 7), torch.randn(8, 7)
    torch.manual_seed(2)
    plain = wgangp_fast.gradient_penalty(critic, real, fake)
    plain.backward()
    plain_grads = _grads(critic)
    _zero(critic)
    torch.manual_seed(2)
    scaled = wgangp_fast.gradient_penalty(critic, real, fake, scaler=scaler)
    torch.testing.assert_close(scaled, plain, rtol=1e-5, atol=1e-6)
    scaled.backward()
    for a, b in zip(_grads(critic), plain_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_wasserstein_gp_loss_returns_loss_and_info():
    torch.manual_seed(0)
    critic = ConvLN()
    real, fake = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    loss_fn = wgangp_fast.WassersteinGPLoss(lambda_gp=10.0)
    torch.manual_seed(7)
    loss, info = loss_fn.critic_loss(critic, real, fake)
    assert set(info) == {"wasserstein", "gp", "d_real", "d_fake"}
    torch.manual_seed(7)
    d_real, d_fake = critic(real).mean(), critic(fake).mean()
    gp = per_sample_gradient_penalty(critic, real, fake, lambda_gp=10.0)
    torch.testing.assert_close(loss, -(d_real - d_fake) + gp, rtol=1e-5, atol=1e-6)
    assert info["wasserstein"] == pytest.approx((d_real - d_fake).item(), rel=1e-6)
    assert info["gp"] == pytest.approx(gp.item(), rel=1e-5)
    assert loss_fn.generator_loss(torch.tensor([1.0, 3.0])).item() == -2.0


def test_generator_argument_makes_alpha_reproducible():
    x, y = torch.randn(6, 4), torch.randn(6, 4)
    a = wgangp_fast.interpolate(x, y, pac=3, generator=torch.Generator().manual_seed(9))
    b = wgangp_fast.interpolate(x, y, pac=3, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
    alpha = torch.rand(2, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(a, autograd_interpolate(x, y, alpha, 3))


def test_explicit_alpha_in_any_shape_that_flattens_to_m():
    x, y = torch.randn(6, 2, 3), torch.randn(6, 2, 3)
    alpha = torch.rand(3)
    base = wgangp_fast.interpolate(x, y, alpha, pac=2)
    for shaped in (alpha.view(3, 1), alpha.view(3, 1, 1), alpha.view(1, 3)):
        assert torch.equal(wgangp_fast.interpolate(x, y, shaped, pac=2), base)


def test_group_options_keep_one_name_through_the_layers():
    """alpha_per and norm_per (and pac) are spelled the same in the native API, the drop-in,
    the method patch and its layout, and reach the ops as their pac."""
    import inspect

    from wgangp_fast.integrations import MethodLayout, drop_in_penalty, patch_method

    fields = {f for f in MethodLayout.__dataclass_fields__}
    for name in ("pac", "alpha_per", "norm_per", "norm_dims"):
        for fn in (wgangp_fast.gradient_penalty, drop_in_penalty, patch_method):
            assert name in inspect.signature(fn).parameters, (fn.__name__, name)
        assert name in fields
    torch.manual_seed(0)
    critic = Packed(3, 1).double()
    real, fake = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 3, dtype=torch.float64)
    a = torch.rand(8, dtype=torch.float64)
    split, norms = wgangp_fast.gradient_penalty(critic, real, fake, alpha=a, alpha_per=1,
                                                norm_per=4, return_norms=True)
    x = autograd_interpolate(real, fake, a, 1).requires_grad_(True)
    out = critic(x)
    (g,) = torch.autograd.grad(out, x, torch.ones_like(out), create_graph=True)
    want = wgangp_fast.gradient_norm_penalty(g, pac=4, scale=10.0)
    torch.testing.assert_close(split, want, rtol=1e-12, atol=1e-14)
    assert norms.shape == (2,)
