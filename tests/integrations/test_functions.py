"""The drop-ins with common penalty functions' signatures (integrations.functions) give the
originals' values and parameter gradients for the same RNG."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from wgangp_fast.integrations import functions
from wgangp_fast.testing import per_sample_gradient_penalty

from ..cases import FUSED_GRAD_FN, node_name
from ..seed_code import Seed003Loss, seed002_compute_gradient_penalty, seed003_gradient_penalty

pytestmark = pytest.mark.usefixtures("one_thread")


class MLPCritic(nn.Module):
    """Seed 002's critic shape, small."""

    def __init__(self, image_dim, hidden=16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(image_dim, hidden * 2), nn.LeakyReLU(0.2),
            nn.Linear(hidden * 2, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, x):
        return self.net(x.view(x.size(0), -1))


class ConvCritic(nn.Module):
    """Seed 003's LayerNorm conv critic for 32x32 images, few channels."""

    def __init__(self, channels=1, fm=4):
        super().__init__()
        self.model = nn.Sequential(
            nn.Conv2d(channels, fm, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(fm, fm * 2, 4, 2, 1), nn.LayerNorm([fm * 2, 8, 8]), nn.LeakyReLU(0.2),
            nn.Conv2d(fm * 2, fm * 4, 4, 2, 1), nn.LayerNorm([fm * 4, 4, 4]), nn.LeakyReLU(0.2),
            nn.Conv2d(fm * 4, 1, 4, 1, 0))

    def forward(self, x):
        return self.model(x).view(-1, 1)


def _batch(shape, device="cpu", seed=0):
    gen = torch.Generator().manual_seed(seed)
    real = torch.randn(shape, generator=gen).to(device)
    fake = torch.randn(shape, generator=gen).to(device)
    return real, fake


def _outcome(critic, real, fake, fn):
    """(value, critic parameter grads, grad w.r.t. fake, the next random numbers)."""
    torch.manual_seed(21)
    if real.is_cuda:
        torch.cuda.manual_seed(21)
    fake = fake.clone().requires_grad_(True)
    critic.zero_grad(set_to_none=True)
    value = fn(critic, real, fake)
    value.backward()
    grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone()
             for p in critic.parameters()]
    nxt = torch.rand(3, device=real.device)
    return value.detach(), grads, fake.grad.clone(), nxt, node_name(value.grad_fn)


def _assert_same(got, ref, rtol=1e-5, atol=1e-6):
    torch.testing.assert_close(got[0], ref[0], rtol=rtol, atol=atol)
    for g, r in zip(got[1], ref[1]):
        torch.testing.assert_close(g, r, rtol=rtol, atol=atol)
    torch.testing.assert_close(got[2], ref[2], rtol=rtol, atol=atol)
    assert torch.equal(got[3], ref[3]), "the drop-in consumed the RNG differently from the seed"


def test_seed002_compute_gradient_penalty():
    torch.manual_seed(0)
    critic = MLPCritic(1 * 6 * 6)
    real, fake = _batch((9, 1, 6, 6))
    ref = _outcome(critic, real, fake,
                   lambda c, r, f: seed002_compute_gradient_penalty(c, r, f, torch.device("cpu")))
    got = _outcome(critic, real, fake,
                   lambda c, r, f: functions.compute_gradient_penalty(c, r, f, torch.device("cpu")))
    assert FUSED_GRAD_FN in got[4] and FUSED_GRAD_FN not in ref[4]
    _assert_same(got, ref)


def test_seed002_scaled_by_the_caller_like_the_trainer():
    torch.manual_seed(0)
    critic = MLPCritic(1 * 6 * 6)
    real, fake = _batch((8, 1, 6, 6), seed=1)
    ref = _outcome(critic, real, fake,
                   lambda c, r, f: 10.0 * seed002_compute_gradient_penalty(c, r, f, "cpu"))
    got = _outcome(critic, real, fake,
                   lambda c, r, f: 10.0 * functions.compute_gradient_penalty(c, r, f, "cpu"))
    _assert_same(got, ref)


@pytest.mark.parametrize("lambda_gp", [10, 2.5])
def test_seed003_gradient_penalty(lambda_gp):
    torch.manual_seed(0)
    critic = ConvCritic()
    real, fake = _batch((5, 1, 32, 32))
    ref = _outcome(critic, real, fake,
                   lambda c, r, f: seed003_gradient_penalty(c, r, f, "cpu", lambda_gp))
    got = _outcome(critic, real, fake,
                   lambda c, r, f: functions.gradient_penalty(c, r, f, "cpu", lambda_gp))
    assert FUSED_GRAD_FN in got[4]
    _assert_same(got, ref)


def test_seed003_gradient_penalty_default_lambda_and_keywords():
    torch.manual_seed(0)
    critic = ConvCritic()
    real, fake = _batch((4, 1, 32, 32), seed=2)
    ref = _outcome(critic, real, fake, lambda c, r, f: seed003_gradient_penalty(
        D=c, real_data=r, fake_data=f, device="cpu"))
    got = _outcome(critic, real, fake, lambda c, r, f: functions.gradient_penalty(
        D=c, real_data=r, fake_data=f, device="cpu"))
    _assert_same(got, ref)


def test_seed003_loss_class():
    torch.manual_seed(0)
    critic = ConvCritic()
    real, fake = _batch((6, 1, 32, 32), seed=3)
    infos = {}

    def with_loss(loss_obj, key):
        def fn(c, r, f):
            loss, info = loss_obj.critic_loss(c, r, f, "cpu")
            infos[key] = info
            return loss
        return fn

    ref = _outcome(critic, real, fake, with_loss(Seed003Loss(lambda_gp=7), "ref"))
    got = _outcome(critic, real, fake, with_loss(functions.WassersteinGANLoss(lambda_gp=7), "got"))
    _assert_same(got, ref)
    assert infos["got"].keys() == infos["ref"].keys()
    for key in infos["ref"]:
        assert infos["got"][key] == pytest.approx(infos["ref"][key], rel=1e-5, abs=1e-6)
    d_fake = critic(fake)
    torch.testing.assert_close(functions.WassersteinGANLoss().generator_loss(d_fake),
                               Seed003Loss().generator_loss(d_fake))


def test_other_ranks_are_per_sample():
    torch.manual_seed(0)
    critic = MLPCritic(10)
    real, fake = _batch((7, 10))
    ref = _outcome(critic, real, fake, lambda c, r, f: per_sample_gradient_penalty(
        c, r, f, lambda_gp=3.0))
    got = _outcome(critic, real, fake,
                   lambda c, r, f: functions.gradient_penalty(c, r, f, "cpu", lambda_gp=3.0))
    _assert_same(got, ref)


def test_bad_input_is_a_clear_error():
    critic = MLPCritic(10)
    with pytest.raises(ValueError, match="same shape"):
        functions.compute_gradient_penalty(critic, torch.randn(4, 10), torch.randn(5, 10), "cpu")
    with pytest.raises(TypeError, match="lambda_gp"):
        functions.WassersteinGANLoss(lambda_gp="ten")


def test_another_codes_call_with_labels_where_the_device_goes_is_refused():
    # A public compute_gradient_penalty(D, real, fake, labels) is another function: the labels
    # land on seed 002's device argument; the error points to drop_in_penalty.
    critic = MLPCritic(10)
    real, fake = _batch((4, 10))
    labels = torch.tensor([0, 1, 0, 1])
    with pytest.raises(TypeError) as info:
        functions.compute_gradient_penalty(critic, real, fake, labels)
    message = str(info.value)
    for word in ("device must be a device", "got Tensor", "drop_in_penalty"):
        assert word in message, f"{word!r} not in {message!r}"
    with pytest.raises(TypeError, match="device must be a device"):
        functions.gradient_penalty(critic, real, fake, None)
    assert torch.isfinite(functions.compute_gradient_penalty(critic, real, fake, torch.device("cpu")))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_seed003_on_gpu():
    torch.manual_seed(0)
    critic = ConvCritic().cuda()
    real, fake = _batch((6, 1, 32, 32), device="cuda")
    ref = _outcome(critic, real, fake,
                   lambda c, r, f: seed003_gradient_penalty(c, r, f, torch.device("cuda")))
    got = _outcome(critic, real, fake,
                   lambda c, r, f: functions.gradient_penalty(c, r, f, torch.device("cuda")))
    _assert_same(got, ref, rtol=1e-4, atol=1e-5)
