"""Bad input gets a ValueError or TypeError that names the argument and what was expected."""

from __future__ import annotations

import pytest
import torch

import wgangp_fast
from wgangp_fast import gradient_norm_penalty, interpolate


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
