"""Eager calls use autograd.Function twins of the registered ops; both paths must give the same
values, the same gradients, and pass gradcheck and gradgradcheck."""

from __future__ import annotations

import pytest
import torch

import wgangp_fast
from wgangp_fast import ops

from .cases import backend_params, batch

BACKEND = backend_params()


def _run_all(backend):
    real = batch(6, (4, 5), torch.float32, 1).requires_grad_()
    fake = batch(6, (4, 5), torch.float32, 2).requires_grad_()
    alpha = torch.linspace(0.1, 0.9, 3, device=real.device).requires_grad_()
    x = wgangp_fast.interpolate(real, fake, alpha, pac=2, backend=backend)
    grads = (x * 0.3).reshape(6, -1)
    weight = torch.tensor([0.5, 1.0, 2.0], device=real.device, requires_grad=True)
    out, norms = wgangp_fast.gradient_norm_penalty(grads, pac=2, weight=weight, target=0.8,
                                                   backend=backend, return_norms=True)
    (out + norms.sum()).backward()
    return [out.detach(), norms.detach(), x.detach(), real.grad, fake.grad, alpha.grad, weight.grad]


@pytest.mark.parametrize("backend", BACKEND)
def test_twin_and_dispatcher_paths_agree(backend, monkeypatch):
    fast = _run_all(backend)
    monkeypatch.setattr(ops, "FORCE_DISPATCHER", True)
    dispatched = _run_all(backend)
    for a, b in zip(fast, dispatched):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", BACKEND)
def test_dispatcher_path_gradgradcheck(backend, monkeypatch):
    monkeypatch.setattr(ops, "FORCE_DISPATCHER", True)
    real = batch(4, (3,), torch.float64, 3).requires_grad_()
    fake = batch(4, (3,), torch.float64, 4).requires_grad_()
    alpha = torch.tensor([0.3, 0.6], dtype=torch.float64, device=real.device, requires_grad=True)

    def interp(r, f, a):
        return wgangp_fast.interpolate(r, f, a, pac=2, backend=backend)

    assert torch.autograd.gradgradcheck(interp, (real, fake, alpha))
    grads = batch(4, (3,), torch.float64, 5).requires_grad_()

    def pen(g):
        return wgangp_fast.gradient_norm_penalty(g, pac=2, target=0.5, one_sided=True,
                                                 backend=backend)

    assert torch.autograd.gradcheck(pen, (grads,))
    assert torch.autograd.gradgradcheck(pen, (grads,))


@pytest.mark.parametrize("backend", BACKEND)
def test_calls_autograd_would_not_record_skip_the_function(backend, monkeypatch):
    """No input requiring grad, or grad mode off (a first-order backward): the kernel runs bare,
    with the same values as through the autograd.Function, and records no graph."""
    real, fake = batch(6, (5,), torch.float32, 7), batch(6, (5,), torch.float32, 8)
    alpha = torch.tensor([0.2, 0.5, 0.9], device=real.device)
    grads = batch(6, (5,), torch.float32, 9)
    applied = []
    for fn in (ops._InterpolateFn, ops._PenaltyFn, ops._PenaltyBackwardFn):
        original = fn.apply
        monkeypatch.setattr(fn, "apply", lambda *a, _o=original, _fn=fn: applied.append(_fn)
                            or _o(*a))
    x = wgangp_fast.interpolate(real, fake, alpha, pac=2, backend=backend)
    out = wgangp_fast.gradient_norm_penalty(grads, pac=2, backend=backend)
    assert applied == [] and x.grad_fn is None and out.grad_fn is None

    g = grads.clone().requires_grad_()
    out_g = wgangp_fast.gradient_norm_penalty(g, pac=2, backend=backend)
    assert applied == [ops._PenaltyFn]
    (d_plain,) = torch.autograd.grad(out_g, g, retain_graph=True)
    assert applied == [ops._PenaltyFn]  # first order: the backward kernel ran bare
    (d_graph,) = torch.autograd.grad(out_g, g, create_graph=True)
    assert applied == [ops._PenaltyFn, ops._PenaltyBackwardFn] and d_graph.grad_fn is not None
    assert torch.equal(d_plain, d_graph.detach())
    with torch.no_grad():
        assert torch.equal(out, wgangp_fast.gradient_norm_penalty(g, pac=2, backend=backend))
    assert torch.equal(out, out_g.detach())
    assert torch.equal(x, ops._InterpolateFn.kernel(real, fake, alpha, 2,
                                                    wgangp_fast.backends.resolve(backend,
                                                                                 real.device)))
