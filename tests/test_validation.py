"""Bad input gets a ValueError or TypeError that names the argument and what was expected."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import wgangp_fast
from wgangp_fast import gradient_norm_penalty, interpolate
from wgangp_fast.testing import autograd_gradient_norm_penalty


def _pair(n=4, d=3, dtype=torch.float32):
    return torch.randn(n, d, dtype=dtype), torch.randn(n, d, dtype=dtype)


@pytest.mark.parametrize(
    "make, exc, words",
    [
        (lambda: interpolate(torch.randn(4, 3), torch.randn(4, 5)), ValueError,
         ["real and fake", "same shape", "[4, 3]", "[4, 5]"]),
        (lambda: interpolate(torch.randn(4, 3), torch.randn(4, 3).double()), TypeError,
         ["real and fake", "dtype"]),
        (lambda: interpolate(torch.randn(4, 3), torch.randn(4, 3, device="meta")), ValueError,
         ["device"]),
        (lambda: interpolate(torch.randn(7, 3), torch.randn(7, 3), pac=2), ValueError,
         ["N=7", "pac=2"]),
        (lambda: interpolate(torch.ones(4, 3, dtype=torch.int64), torch.ones(4, 3, dtype=torch.int64)),
         TypeError, ["real", "floating-point", "int64"]),
        (lambda: interpolate(torch.ones(4, 3, dtype=torch.bool), torch.ones(4, 3, dtype=torch.bool)),
         TypeError, ["real", "floating-point", "bool"]),
        (lambda: interpolate(torch.randn(0, 3), torch.randn(0, 3)), ValueError, ["real", "empty"]),
        (lambda: interpolate(torch.randn(4, 0), torch.randn(4, 0)), ValueError, ["real", "no elements"]),
        (lambda: interpolate(torch.tensor(1.0), torch.tensor(2.0)), ValueError, ["real", "batch"]),
        (lambda: interpolate([1.0], torch.randn(1)), TypeError, ["real", "torch.Tensor"]),
        (lambda: interpolate(*_pair(), alpha=torch.rand(3)), ValueError, ["alpha", "M=4", "3"]),
        (lambda: interpolate(*_pair(), alpha=torch.rand(4, 2)), ValueError, ["alpha", "M=4"]),
        (lambda: interpolate(*_pair(4), alpha=torch.rand(4), pac=2), ValueError, ["alpha", "M=2"]),
        (lambda: interpolate(*_pair(), alpha=torch.ones(4, dtype=torch.int32)), TypeError, ["alpha"]),
        (lambda: interpolate(*_pair(), pac=0), ValueError, ["pac", "at least 1"]),
        (lambda: interpolate(*_pair(), pac=2.0), TypeError, ["pac", "int"]),
        (lambda: interpolate(*_pair(), backend="gpu"), ValueError, ["backend", "'gpu'"]),
        (lambda: gradient_norm_penalty(torch.randn(4, 3), eps=-1.0), ValueError, ["eps", ">= 0"]),
        (lambda: gradient_norm_penalty(torch.randn(4, 3), target=-0.5), ValueError, ["target"]),
        (lambda: gradient_norm_penalty(torch.randn(4, 3), target=float("nan")), ValueError,
         ["target", "finite"]),
        (lambda: gradient_norm_penalty(torch.randn(4, 3), input_scale=0.0), ValueError,
         ["input_scale", "> 0"]),
        (lambda: gradient_norm_penalty(torch.randn(4, 3), scale=float("inf")), ValueError,
         ["scale", "finite"]),
        (lambda: gradient_norm_penalty(torch.randn(4, 3), reduction="avg"), ValueError,
         ["reduction", "'avg'", "'mean'"]),
        (lambda: gradient_norm_penalty(torch.randn(6, 3), pac=4), ValueError, ["N=6", "pac=4"]),
        (lambda: gradient_norm_penalty(torch.randn(4, 3), weight=torch.ones(3)), ValueError,
         ["weight", "M=4"]),
        (lambda: gradient_norm_penalty(torch.ones(4, 3, dtype=torch.int64)), TypeError,
         ["grads", "floating-point"]),
        (lambda: gradient_norm_penalty(torch.randn(0, 3)), ValueError, ["grads", "empty"]),
        (lambda: gradient_norm_penalty(torch.randn(4, 3), one_sided=1), TypeError, ["one_sided"]),
        (lambda: gradient_norm_penalty(torch.randn(4, 3), backend="fast"), ValueError, ["backend"]),
        (lambda: wgangp_fast.gradient_penalty(torch.nn.Linear(3, 1), *_pair(), lambda_gp="10"),
         TypeError, ["lambda_gp"]),
        (lambda: wgangp_fast.gradient_penalty("critic", *_pair()), TypeError, ["critic"]),
        (lambda: wgangp_fast.gradient_penalty(lambda x: [x.sum(1).tolist()], *_pair()), TypeError,
         ["critic must return a Tensor"]),
    ],
)
def test_bad_input_names_the_argument(make, exc, words):
    with pytest.raises(exc) as info:
        make()
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_env_backend_must_be_known(monkeypatch):
    monkeypatch.setenv("WGANGP_FAST_BACKEND", "warp")
    with pytest.raises(ValueError, match="WGANGP_FAST_BACKEND"):
        interpolate(*_pair())


def test_env_backend_that_is_unavailable_names_the_variable(monkeypatch):
    monkeypatch.setenv("WGANGP_FAST_BACKEND", "cuda")
    with pytest.raises(RuntimeError) as info:
        interpolate(*_pair())  # CPU tensors: the cuda backend never takes them
    message = str(info.value)
    assert "WGANGP_FAST_BACKEND=cuda" in message and "unset WGANGP_FAST_BACKEND" in message
    assert "CUDA tensors" in message
    # an explicit backend argument keeps its own message
    monkeypatch.delenv("WGANGP_FAST_BACKEND")
    with pytest.raises(RuntimeError, match="backend='cuda' is unavailable") as info:
        interpolate(*_pair(), backend="cuda")
    assert "WGANGP_FAST_BACKEND" not in str(info.value)


@pytest.mark.parametrize("value", [["mean"], ("sum",), {"mean"}, 1, None])
def test_reduction_of_another_type_is_a_clear_type_error(value):
    with pytest.raises(TypeError) as info:
        gradient_norm_penalty(torch.randn(4, 3), reduction=value)
    message = str(info.value)
    assert "reduction must be a str" in message and repr(value) in message
    assert "unhashable" not in message


def test_numpy_numbers_are_accepted_where_python_numbers_are():
    real, fake = _pair(6)
    alpha = torch.rand(3)
    a = interpolate(real, fake, alpha, pac=np.int64(2))
    assert torch.equal(a, interpolate(real, fake, alpha, pac=2))
    grads = torch.randn(6, 5, dtype=torch.float64)
    kw = dict(pac=2, target=0.5, one_sided=True, eps=1e-3, input_scale=2.0, scale=3.0)
    np_kw = dict(pac=np.int32(2), target=np.float32(0.5), one_sided=np.bool_(True),
                 eps=np.float64(1e-3), input_scale=np.int64(2), scale=np.float16(3.0))
    assert torch.equal(gradient_norm_penalty(grads, **np_kw), gradient_norm_penalty(grads, **kw))
    critic = torch.nn.Linear(5, 1).double()
    real, fake = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    torch.manual_seed(0)
    expected = wgangp_fast.gradient_penalty(critic, real, fake, lambda_gp=10.0, pac=2)
    torch.manual_seed(0)
    got = wgangp_fast.gradient_penalty(critic, real, fake, lambda_gp=np.float32(10.0),
                                       pac=np.uint8(2))
    assert torch.equal(got, expected)


@pytest.mark.parametrize("make, words", [
    (lambda: gradient_norm_penalty(torch.randn(4, 3), pac=np.float64(2.0)), ["pac", "int"]),
    (lambda: gradient_norm_penalty(torch.randn(4, 3), pac=np.bool_(True)), ["pac", "int"]),
    (lambda: gradient_norm_penalty(torch.randn(4, 3), scale=np.bool_(True)), ["scale", "number"]),
    (lambda: gradient_norm_penalty(torch.randn(4, 3), one_sided=np.int64(1)),
     ["one_sided", "bool"]),
    (lambda: gradient_norm_penalty(torch.randn(4, 3), target=torch.tensor(1.0, requires_grad=True)),
     ["target", "requires grad", "target.detach()"]),
    (lambda: gradient_norm_penalty(torch.randn(4, 3),
                                   input_scale=torch.tensor(2.0, requires_grad=True)),
     ["input_scale", "requires grad"]),
    (lambda: gradient_norm_penalty(torch.randn(4, 3), scale=torch.ones(2, requires_grad=True)),
     ["scale", "one-element", "[2]"]),
    (lambda: gradient_norm_penalty(torch.randn(4, 3),
                                   scale=torch.tensor(float("nan"), requires_grad=True)),
     ["scale", "finite"]),
    (lambda: wgangp_fast.gradient_penalty(torch.nn.Linear(3, 1), *_pair(),
                                          lambda_gp=torch.tensor(10.0, requires_grad=True)),
     ["lambda_gp", "requires grad"]),
])
def test_numbers_that_cannot_serve_are_refused(make, words):
    with pytest.raises((TypeError, ValueError)) as info:
        make()
    for word in words:
        assert word in str(info.value), f"{word!r} not in {str(info.value)!r}"


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_scale_that_requires_grad_gets_its_gradient(reduction, dtype):
    g0 = torch.randn(6, 4, dtype=torch.float64)
    g = g0.to(dtype).requires_grad_()
    s = torch.tensor(2.5, dtype=dtype, requires_grad=True)
    out = gradient_norm_penalty(g, pac=2, target=0.5, reduction=reduction, scale=s)
    assert out.dtype == dtype
    weights = torch.linspace(0.5, 1.5, out.numel(), dtype=dtype).reshape(out.shape)
    d_g, d_s = torch.autograd.grad((out * weights).sum(), (g, s))
    gr = g0.clone().requires_grad_()
    sr = torch.tensor(2.5, dtype=torch.float64, requires_grad=True)
    ref = autograd_gradient_norm_penalty(gr, 2, target=0.5, reduction=reduction, scale=sr)
    e_g, e_s = torch.autograd.grad((ref * weights.double()).sum(), (gr, sr))
    atol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(out.double(), ref.detach(), atol=atol, rtol=atol)
    torch.testing.assert_close(d_g.double(), e_g, atol=atol, rtol=atol)
    torch.testing.assert_close(d_s.double(), e_s, atol=atol, rtol=atol)
    assert d_s.abs() > 0


def test_a_scale_that_requires_grad_in_the_drop_in_and_twice():
    grads = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda g, s: gradient_norm_penalty(g, pac=2, scale=s),
                                    (grads, scale))
    assert torch.autograd.gradgradcheck(lambda g, s: gradient_norm_penalty(g, pac=2, scale=s),
                                        (grads, scale))


class _Detaching(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 1)

    def forward(self, x):
        return self.lin(x.detach())


@pytest.mark.parametrize("critic, what", [
    (_Detaching(), "does not depend on its input"),
    (lambda x: torch.ones(x.shape[0], 1), "does not require grad"),
    (lambda x: torch.nn.Linear(3, 1)(torch.from_numpy(x.detach().numpy())),
     "does not depend on its input"),
])
def test_a_critic_not_differentiable_in_its_input_is_a_clear_error(critic, what):
    with pytest.raises(RuntimeError) as info:
        wgangp_fast.gradient_penalty(critic, *_pair())
    message = str(info.value)
    assert "critic is not differentiable with respect to its input" in message and what in message
    assert "allow_unused" not in message


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_the_drop_in_under_no_grad_is_a_clear_error(context):
    critic = torch.nn.Linear(3, 1)
    with context(), pytest.raises(RuntimeError) as info:
        wgangp_fast.gradient_penalty(critic, *_pair())
    message = str(info.value)
    assert "gradients disabled" in message and "torch.no_grad()" in message
    assert "torch.enable_grad()" in message
    with torch.no_grad(), torch.enable_grad():  # the fix the message suggests
        assert wgangp_fast.gradient_penalty(critic, *_pair()).requires_grad
