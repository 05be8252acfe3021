"""Eager calls skip the registered ops: the compiled backends call their kernel ops, whose autograd
is C++ (csrc/autograd.cpp), the others autograd.Function twins of the registered ops. Every path
must give the same values and gradients, and pass gradcheck and gradgradcheck."""

from __future__ import annotations

import pytest
import torch

import wgangp_fast
from wgangp_fast import ops
from wgangp_fast.ops import _dispatch
from wgangp_fast.ops.interpolation import _InterpolateBackwardFn, _InterpolateFn
from wgangp_fast.ops.penalty import _PenaltyBackwardFn, _PenaltyFn

from ..cases import FUSED_GRAD_FN, backend_params, batch, node_name

BACKEND = backend_params()
COMPILED = backend_params(["cpu", "cuda"])


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
    monkeypatch.setattr(_dispatch, "CPP_AUTOGRAD", False)  # the compiled backends' twins
    twins = _run_all(backend)
    monkeypatch.setattr(_dispatch, "FORCE_DISPATCHER", True)
    dispatched = _run_all(backend)
    for a, b, c in zip(fast, twins, dispatched):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_the_flags_are_read_and_set_through_wgangp_fast_ops(monkeypatch):
    """wgangp_fast.ops.CPP_AUTOGRAD and FORCE_DISPATCHER are the flags _run reads in _dispatch."""
    before = {name: getattr(_dispatch, name) for name in ("CPP_AUTOGRAD", "FORCE_DISPATCHER")}
    for name, value in before.items():
        assert getattr(ops, name) is value
        monkeypatch.setattr(ops, name, not value)
        assert getattr(_dispatch, name) is (not value) and getattr(ops, name) is (not value)
    monkeypatch.undo()
    assert {name: getattr(_dispatch, name) for name in before} == before


@pytest.mark.parametrize("backend", BACKEND)
def test_dispatcher_path_gradgradcheck(backend, monkeypatch):
    monkeypatch.setattr(_dispatch, "FORCE_DISPATCHER", True)
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
    with the same values as through the autograd.Function, and records no graph (the compiled
    backends' twins with the C++ autograd switched off)."""
    monkeypatch.setattr(_dispatch, "CPP_AUTOGRAD", False)
    real, fake = batch(6, (5,), torch.float32, 7), batch(6, (5,), torch.float32, 8)
    alpha = torch.tensor([0.2, 0.5, 0.9], device=real.device)
    grads = batch(6, (5,), torch.float32, 9)
    applied = []
    for fn in (_InterpolateFn, _PenaltyFn, _PenaltyBackwardFn):
        original = fn.apply
        monkeypatch.setattr(fn, "apply", lambda *a, _o=original, _fn=fn: applied.append(_fn)
                            or _o(*a))
    x = wgangp_fast.interpolate(real, fake, alpha, pac=2, backend=backend)
    out = wgangp_fast.gradient_norm_penalty(grads, pac=2, backend=backend)
    assert applied == [] and x.grad_fn is None and out.grad_fn is None

    g = grads.clone().requires_grad_()
    out_g = wgangp_fast.gradient_norm_penalty(g, pac=2, backend=backend)
    assert applied == [_PenaltyFn]
    (d_plain,) = torch.autograd.grad(out_g, g, retain_graph=True)
    assert applied == [_PenaltyFn]  # first order: the backward kernel ran bare
    (d_graph,) = torch.autograd.grad(out_g, g, create_graph=True)
    assert applied == [_PenaltyFn, _PenaltyBackwardFn] and d_graph.grad_fn is not None
    assert torch.equal(d_plain, d_graph.detach())
    with torch.no_grad():
        assert torch.equal(out, wgangp_fast.gradient_norm_penalty(g, pac=2, backend=backend))
    assert torch.equal(out, out_g.detach())
    assert torch.equal(x, _InterpolateFn.kernel(real, fake, alpha, 2,
                                                wgangp_fast.backends.resolve(backend, real.device)))


@pytest.mark.parametrize("backend", COMPILED)
def test_compiled_backends_record_one_cpp_node_and_no_python_function(backend, monkeypatch):
    """The C++ path: no autograd.Function twin runs; the graph holds the C++ nodes; a first-order
    backward builds no graph, create_graph=True builds one through the backward kernel op's
    registered autograd; calls autograd would not record run bare."""
    real, fake = batch(6, (5,), torch.float32, 7), batch(6, (5,), torch.float32, 8)
    alpha = torch.tensor([0.2, 0.5, 0.9], device=real.device)
    applied = []
    for fn in (_InterpolateFn, _InterpolateBackwardFn, _PenaltyFn, _PenaltyBackwardFn):
        original = fn.apply
        monkeypatch.setattr(fn, "apply", lambda *a, _o=original, _fn=fn: applied.append(_fn)
                            or _o(*a))
    x = wgangp_fast.interpolate(real, fake, alpha, pac=2, backend=backend)
    assert x.grad_fn is None
    r = real.clone().requires_grad_()
    x_r = wgangp_fast.interpolate(r, fake, alpha, pac=2, backend=backend)
    assert "wgangp_fast_interpolate" in node_name(x_r.grad_fn)
    (d_r,) = torch.autograd.grad(x_r, r, torch.ones_like(x_r))
    assert torch.equal(d_r, alpha.repeat_interleave(2).reshape(6, 1).expand(6, 5))

    g = batch(6, (5,), torch.float32, 9).requires_grad_()
    out = wgangp_fast.gradient_norm_penalty(g, pac=2, backend=backend)
    assert FUSED_GRAD_FN in node_name(out.grad_fn)
    assert "CppNode" in node_name(out.grad_fn)
    (d_plain,) = torch.autograd.grad(out, g, retain_graph=True)
    assert d_plain.grad_fn is None
    (d_graph,) = torch.autograd.grad(out, g, create_graph=True)
    assert "penalty_backward_kernel" in node_name(d_graph.grad_fn)
    assert torch.equal(d_plain, d_graph.detach())
    (dd,) = torch.autograd.grad(d_graph.square().sum(), g)
    with torch.no_grad():
        assert wgangp_fast.gradient_norm_penalty(g, pac=2, backend=backend).grad_fn is None
    assert applied == []
    hessian = torch.autograd.functional.hessian(
        lambda v: wgangp_fast.gradient_norm_penalty(v, pac=2, backend="reference"), g.detach())
    torch.testing.assert_close(dd, torch.einsum("ijkl,kl->ij", hessian, 2 * d_plain))


@pytest.mark.parametrize("backend", BACKEND)
def test_gradient_through_one_output_only(backend):
    """A loss on the norms alone (the penalty's output unused) or on the penalty alone: the unused
    output's gradient arrives undefined, and each path must treat it as zero."""
    grads = batch(6, (5,), torch.float64, 10)
    weight = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64, device=grads.device)
    results = {}
    for name in (backend, "reference"):
        g = grads.clone().requires_grad_()
        w = weight.clone().requires_grad_()
        out, norms = wgangp_fast.gradient_norm_penalty(g, pac=2, weight=w, target=0.7,
                                                       backend=name, return_norms=True)
        by_norms = torch.autograd.grad(norms.square().sum(), g, retain_graph=True)[0]
        by_out = torch.autograd.grad(out, (g, w))
        results[name] = (by_norms, *by_out)
    for got, want in zip(results[backend], results["reference"]):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert results[backend][0].abs().sum() > 0
