"""patch_method on classes that are not CTGAN's: defaults, inheritance, verification, misuse."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from wgangp_fast.integrations import (
    IncompatibleSignatureError,
    fused_calc_gradient_penalty,
    get_handle,
    is_patched,
    patch_method,
    patched_method,
    unpatch_method,
)

from ..cases import FUSED_GRAD_FN, node_name


def _ctgan_formula(critic, real_data, fake_data, device, pac, lambda_, *, ignore_lambda=False):
    """CTGAN's penalty in plain autograd (the formula the patched methods must compute)."""
    m, d = real_data.size(0) // pac, real_data.size(1)
    alpha = torch.rand(m, 1, 1, device=device).repeat(1, pac, d).view(-1, d)
    x_hat = alpha * real_data + (1 - alpha) * fake_data
    x_hat.requires_grad_(True)
    out = critic(x_hat)
    (grads,) = torch.autograd.grad(out, x_hat, torch.ones_like(out), create_graph=True)
    pen = ((grads.view(-1, pac * d).norm(2, dim=1) - 1) ** 2).mean()
    return pen if ignore_lambda else pen * lambda_


class PacCritic(nn.Module):
    """A packed MLP critic whose penalty method has CTGAN's signature but pac=2 by default."""

    def __init__(self, dim=5, pac=2, batchnorm=False):
        super().__init__()
        self.pac = pac
        layers = [nn.Linear(dim * pac, 12)]
        if batchnorm:
            layers.append(nn.BatchNorm1d(12))
        layers += [nn.LeakyReLU(0.2), nn.Dropout(0.3), nn.Linear(12, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x.reshape(-1, x.shape[1] * self.pac))

    def calc_gradient_penalty(self, real_data, fake_data, device="cpu", pac=2, lambda_=4.0):
        return _ctgan_formula(self, real_data, fake_data, device, pac, lambda_)


class SubCritic(PacCritic):
    pass


class UnscaledCritic(PacCritic):
    def calc_gradient_penalty(self, real_data, fake_data, device="cpu", pac=2, lambda_=4.0):
        return _ctgan_formula(self, real_data, fake_data, device, pac, lambda_,
                              ignore_lambda=True)


class FailingCritic(PacCritic):
    def calc_gradient_penalty(self, real_data, fake_data, device="cpu", pac=2, lambda_=4.0):
        raise NotImplementedError("no penalty here")


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny critics: a second intra-op thread buys nothing and stalls on a busy 2-core machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _clean():
    originals = {c: dict(vars(c)) for c in (PacCritic, SubCritic, UnscaledCritic, FailingCritic)}
    yield
    for cls in originals:
        if is_patched(cls):
            unpatch_method(cls)
        assert vars(cls).get("calc_gradient_penalty") is originals[cls].get(
            "calc_gradient_penalty")


def _data(n=12, dim=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=gen), torch.randn(n, dim, generator=gen)


def _run(critic, real, fake, **kwargs):
    torch.manual_seed(7)
    critic.zero_grad(set_to_none=True)
    pen = critic.calc_gradient_penalty(real, fake, **kwargs)
    pen.backward()
    grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone()
             for p in critic.parameters()]
    return pen.detach(), grads, torch.rand(3), pen.grad_fn


@pytest.mark.parametrize("kwargs", [{}, {"pac": 3, "lambda_": 1.5}, {"device": "cpu"}],
                         ids=["method-defaults", "pac3", "device-kw"])
def test_patched_method_uses_the_original_defaults(kwargs):
    torch.manual_seed(0)
    critic = PacCritic(pac=kwargs.get("pac", 2))
    real, fake = _data()
    ref = _run(critic, real, fake, **kwargs)
    handle = patch_method(PacCritic)
    got = _run(critic, real, fake, **kwargs)
    assert FUSED_GRAD_FN in node_name(got[3]) and FUSED_GRAD_FN not in node_name(ref[3])
    torch.testing.assert_close(got[0], ref[0], rtol=1e-5, atol=1e-6)
    for g, r in zip(got[1], ref[1]):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)
    assert torch.equal(got[2], ref[2])
    handle.unpatch()
    assert not handle.active


def test_fused_function_matches_the_formula():
    torch.manual_seed(0)
    critic = PacCritic(pac=3).eval()
    real, fake = _data(n=9)
    torch.manual_seed(1)
    ref = _ctgan_formula(critic, real, fake, "cpu", 3, 2.0)
    torch.manual_seed(1)
    got = fused_calc_gradient_penalty(critic, real, fake, "cpu", 3, 2.0)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def test_inherited_method_is_overridden_then_inheritance_restored():
    original = PacCritic.__dict__["calc_gradient_penalty"]
    handle = patch_method(SubCritic)
    assert "calc_gradient_penalty" in vars(SubCritic)
    assert PacCritic.__dict__["calc_gradient_penalty"] is original
    torch.manual_seed(0)
    critic = SubCritic()
    real, fake = _data()
    assert FUSED_GRAD_FN in node_name(_run(critic, real, fake)[3])
    assert handle.original_function is original
    assert unpatch_method(SubCritic) is True
    assert "calc_gradient_penalty" not in vars(SubCritic)
    assert SubCritic.calc_gradient_penalty is original


def test_subclass_of_a_patched_class_is_refused():
    patch_method(PacCritic)
    with pytest.raises(RuntimeError, match="inherited from a class that wgangp_fast has patched"):
        patch_method(SubCritic)


def test_verify_catches_a_method_with_the_signature_but_another_formula():
    torch.manual_seed(0)
    critic = UnscaledCritic()
    real, fake = _data()
    patch_method(UnscaledCritic)
    with pytest.raises(RuntimeError, match="not CTGAN's formula"):
        critic.calc_gradient_penalty(real, fake)


def test_verification_runs_once_and_keeps_rng_and_buffers():
    torch.manual_seed(0)
    critic = PacCritic(batchnorm=True)
    real, fake = _data()
    before = critic.net[1].running_mean.clone()
    ref = _run(critic, real, fake)
    ref_stats = critic.net[1].running_mean.clone()
    critic.net[1].running_mean.copy_(before)
    critic.net[1].num_batches_tracked.zero_()
    handle = patch_method(PacCritic)
    assert not handle.verified
    got = _run(critic, real, fake)
    assert handle.verified
    assert torch.equal(got[2], ref[2])
    torch.testing.assert_close(critic.net[1].running_mean, ref_stats)
    assert int(critic.net[1].num_batches_tracked) == 1
    torch.testing.assert_close(got[0], ref[0], rtol=1e-5, atol=1e-6)


def test_check_leaves_what_the_callers_graph_saved_untouched():
    # The critic's BatchNorm already ran on real and fake in the graph the penalty joins: the
    # check must not write into the statistics those forwards saved for loss.backward().
    real, fake = _data()

    def loss_and_grads(critic):
        torch.manual_seed(7)
        critic.zero_grad(set_to_none=True)
        loss = critic(real).mean() - critic(fake).mean() + critic.calc_gradient_penalty(real, fake)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in critic.parameters()]

    torch.manual_seed(0)
    critic = PacCritic(batchnorm=True)
    state = {k: v.clone() for k, v in critic.state_dict().items()}
    want = loss_and_grads(critic)
    want_stats = critic.net[1].running_var.clone()
    critic.load_state_dict(state)
    handle = patch_method(PacCritic)
    got = loss_and_grads(critic)
    assert handle.verified and handle.checked
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
    for g, w in zip(got[1], want[1]):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(critic.net[1].running_var, want_stats)


def test_verify_false_skips_the_check():
    torch.manual_seed(0)
    critic = UnscaledCritic()
    real, fake = _data()
    patch_method(UnscaledCritic, verify=False)
    torch.manual_seed(3)
    got = critic.calc_gradient_penalty(real, fake)
    torch.manual_seed(3)
    expected = fused_calc_gradient_penalty(critic, real, fake, "cpu", 2, 4.0)
    torch.testing.assert_close(got, expected)


def test_an_original_that_raises_is_reported_and_the_fused_penalty_used():
    torch.manual_seed(0)
    critic = FailingCritic().eval()
    real, fake = _data()
    patch_method(FailingCritic)
    with pytest.warns(RuntimeWarning, match="could not check.*no penalty here"):
        pen = critic.calc_gradient_penalty(real, fake)
    assert torch.isfinite(pen)


def test_patch_twice_same_options_warns_other_options_raise():
    first = patch_method(PacCritic, backend="reference")
    with pytest.warns(RuntimeWarning, match="already patched"):
        assert patch_method(PacCritic, backend="reference") is first
    with pytest.raises(ValueError, match="already patched"):
        patch_method(PacCritic)
    assert get_handle(PacCritic) is first


def test_unpatch_refuses_to_clobber_a_later_override():
    original = PacCritic.__dict__["calc_gradient_penalty"]
    handle = patch_method(PacCritic)

    def someone_elses(self, real_data, fake_data, device="cpu", pac=2, lambda_=4.0):
        return handle.replacement(self, real_data, fake_data, device, pac, lambda_)

    PacCritic.calc_gradient_penalty = someone_elses
    with pytest.raises(RuntimeError, match="refusing to overwrite"):
        handle.unpatch()
    assert PacCritic.__dict__["calc_gradient_penalty"] is someone_elses
    PacCritic.calc_gradient_penalty = handle.replacement
    handle.unpatch()
    assert PacCritic.__dict__["calc_gradient_penalty"] is original
    with pytest.raises(RuntimeError, match="no longer active"):
        handle.unpatch()
    with pytest.warns(RuntimeWarning, match="not patched"):
        assert unpatch_method(PacCritic) is False


def test_context_manager():
    original = PacCritic.__dict__["calc_gradient_penalty"]
    with patched_method(PacCritic) as handle:
        assert handle.active and PacCritic.calc_gradient_penalty is handle.replacement
    assert PacCritic.__dict__["calc_gradient_penalty"] is original


class _WrongOrder(nn.Module):
    def calc_gradient_penalty(self, fake_data, real_data, device="cpu", pac=10, lambda_=10):
        raise AssertionError("never called")


class _KeywordOnly(nn.Module):
    def calc_gradient_penalty(self, real_data, fake_data, device="cpu", *, pac=10, lambda_=10):
        raise AssertionError("never called")


class _VarArgs(nn.Module):
    def calc_gradient_penalty(self, real_data, fake_data, *args, **kwargs):
        raise AssertionError("never called")


class _Static(nn.Module):
    @staticmethod
    def calc_gradient_penalty(real_data, fake_data, device="cpu", pac=10, lambda_=10):
        raise AssertionError("never called")


@pytest.mark.parametrize("cls", [_WrongOrder, _KeywordOnly, _VarArgs, _Static])
def test_other_signatures_are_refused_and_left_alone(cls):
    before = cls.__dict__["calc_gradient_penalty"]
    with pytest.raises(IncompatibleSignatureError, match="calc_gradient_penalty"):
        patch_method(cls)
    assert cls.__dict__["calc_gradient_penalty"] is before
    assert not is_patched(cls)


def test_bad_arguments():
    with pytest.raises(TypeError, match="cls must be a class"):
        patch_method(PacCritic())
    with pytest.raises(AttributeError, match="no method 'penalty'"):
        patch_method(PacCritic, "penalty")
    with pytest.raises(TypeError, match="backend"):
        patch_method(PacCritic, backend=None)
    with pytest.raises(ValueError, match="backend must be one of"):
        patch_method(PacCritic, backend="gpu")
    with pytest.raises(TypeError, match="verify"):
        patch_method(PacCritic, verify=1)
    assert not is_patched(PacCritic)


def test_call_with_wrong_arguments_is_the_originals_type_error():
    patch_method(PacCritic)
    critic = PacCritic()
    real, fake = _data()
    with pytest.raises(TypeError):
        critic.calc_gradient_penalty(real, fake, "cpu", 2, 4.0, "extra")
    with pytest.raises(TypeError):
        critic.calc_gradient_penalty(real)


def test_keyword_call_is_verified_against_the_original():
    torch.manual_seed(0)
    critic = UnscaledCritic()
    real, fake = _data()
    patch_method(UnscaledCritic)
    with pytest.raises(RuntimeError, match="not CTGAN's formula"):
        critic.calc_gradient_penalty(real_data=real, fake_data=fake, lambda_=2.0)
