"""A NaN or infinity in the gradients is propagated, never hidden: every backend (and every call
path) gives what eager autograd through torch.linalg.vector_norm gives, NaN for NaN, while a group
whose norm is truly zero keeps its zero derivative."""

from __future__ import annotations

import pytest
import torch

import wgangp_fast
from wgangp_fast.ops import _dispatch
from wgangp_fast.testing import autograd_gradient_norm_penalty

from ..cases import DEVICE, backend_params

BACKEND = backend_params()
PATHS = ["default", "twin", "dispatcher"]  # eager Function, setup_context twin, registered op


def _poisoned(value, dtype=torch.float64):
    """[8, 3] gradients in 4 groups of pac 2: group 1 holds one `value`, group 2 is all zeros."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 3, generator=g, dtype=torch.float64)
    x[2, 1] = value
    x[4:6] = 0.0
    return x.to(dtype).to(DEVICE)


def _set_path(path, monkeypatch):
    if path == "twin":  # the path torch.func transforms take
        monkeypatch.setattr(_dispatch, "_transforms_active", lambda: True)
    if path == "dispatcher":
        monkeypatch.setattr(_dispatch, "FORCE_DISPATCHER", True)


def _both(x, backend, **kw):
    """(fused value, fused d/dx) and (eager value, eager d/dx) of the penalty at x."""
    a = x.clone().requires_grad_()
    out = wgangp_fast.gradient_norm_penalty(a, pac=2, backend=backend, **kw)
    (da,) = torch.autograd.grad(out.sum(), a)
    b = x.clone().requires_grad_()
    ref = autograd_gradient_norm_penalty(b, 2, **kw)
    (db,) = torch.autograd.grad(ref.sum(), b)
    return (out.detach(), da), (ref.detach(), db)


@pytest.mark.parametrize("backend", BACKEND)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kw", [{}, {"reduction": "none"}, {"one_sided": True},
                                {"target": 0.0, "reduction": "sum"},
                                {"weight": torch.tensor([1.0, 2.0, 0.5, 3.0],
                                                        dtype=torch.float64)}],
                         ids=["mean", "none", "one_sided", "r1_sum", "weight"])
def test_a_nan_reaches_its_whole_group(backend, path, kw, monkeypatch):
    _set_path(path, monkeypatch)
    if "weight" in kw:
        kw = dict(kw, weight=kw["weight"].to(DEVICE))
    x = _poisoned(float("nan"))
    (out, da), (ref, db) = _both(x, backend, **kw)
    torch.testing.assert_close(out, ref, equal_nan=True)
    torch.testing.assert_close(da, db, equal_nan=True)
    # the NaN group's finite elements get NaN, not 0; the other groups stay finite
    assert torch.isnan(da[2:4]).all()
    assert torch.isfinite(da[:2]).all() and torch.isfinite(da[6:]).all()
    # the all-zero group keeps its zero subgradient
    assert torch.equal(da[4:6], torch.zeros_like(da[4:6]))


@pytest.mark.parametrize("backend", BACKEND)
@pytest.mark.parametrize("value", [float("inf"), float("-inf")])
def test_an_infinity_matches_eager_autograd(backend, value):
    (out, da), (ref, db) = _both(_poisoned(value), backend, reduction="none")
    torch.testing.assert_close(out, ref, equal_nan=True)
    torch.testing.assert_close(da, db, equal_nan=True)
    assert not torch.isfinite(da[2:4]).any()


@pytest.mark.parametrize("backend", BACKEND)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_a_nan_in_low_precision_is_not_hidden(backend, dtype):
    x = _poisoned(float("nan"), dtype).requires_grad_()
    out, norms = wgangp_fast.gradient_norm_penalty(x, pac=2, reduction="none", backend=backend,
                                                   return_norms=True)
    (dx,) = torch.autograd.grad(out.sum(), x)
    assert torch.isnan(norms[1]) and torch.isnan(out[1])
    assert torch.isnan(dx[2:4]).all() and torch.isfinite(dx[:2]).all()


@pytest.mark.parametrize("backend", BACKEND)
def test_second_order_propagates_a_nan(backend):
    def grad_of_grad(fn, x):
        a = x.clone().requires_grad_()
        (da,) = torch.autograd.grad(fn(a).sum(), a, create_graph=True)
        (dda,) = torch.autograd.grad((da * da).sum(), a)
        return dda

    x = _poisoned(float("nan"))
    fused = grad_of_grad(lambda a: wgangp_fast.gradient_norm_penalty(a, pac=2, backend=backend),
                         x)
    eager = grad_of_grad(lambda a: autograd_gradient_norm_penalty(a, 2), x)
    # eager's second order is NaN in the all-zero group too (vector_norm's double backward at 0),
    # where the fused op keeps its 0 rule: compared outside that group
    rows = [0, 1, 2, 3, 6, 7]
    torch.testing.assert_close(fused[rows], eager[rows], equal_nan=True)
    assert torch.isnan(fused[2:4]).all() and torch.isfinite(fused[:2]).all()
    assert torch.equal(fused[4:6], torch.zeros_like(fused[4:6]))
