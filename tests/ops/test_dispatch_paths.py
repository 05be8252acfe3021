"""Eager calls skip the registered ops: every backend's kernels run inside a plain
autograd.Function of ops/ (or bare, where autograd records nothing); torch.func transforms and
torch.compile take the setup_context twin of that Function; the compiled kernel ops also carry an
autograd of their own (registered in Python) for their direct callers. Every path must give the
same values and gradients, and pass gradcheck and gradgradcheck."""

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
FUNCTIONS = (_InterpolateFn, _InterpolateBackwardFn, _PenaltyFn, _PenaltyBackwardFn)


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


def _count_applies(monkeypatch):
    """{"eager": [...], "twin": [...]}: the Functions whose apply() runs, in order."""
    applied = {"eager": [], "twin": []}
    for fn in FUNCTIONS:
        for kind, cls in (("eager", fn.eager), ("twin", fn)):
            original = cls.apply
            monkeypatch.setattr(cls, "apply", lambda *a, _o=original, _k=kind, _fn=fn:
                                applied[_k].append(_fn) or _o(*a))
    return applied


@pytest.mark.parametrize("backend", BACKEND)
def test_eager_twin_and_dispatcher_paths_agree(backend, monkeypatch):
    applied = _count_applies(monkeypatch)
    eager = _run_all(backend)
    assert applied["eager"] == [_InterpolateFn, _PenaltyFn] and applied["twin"] == []
    # the path a torch.func transform takes: the setup_context twins, forward and backward
    monkeypatch.setattr(_dispatch, "_transforms_active", lambda: True)
    twins = _run_all(backend)
    assert applied["twin"][:2] == [_InterpolateFn, _PenaltyFn]
    assert applied["eager"] == [_InterpolateFn, _PenaltyFn]
    monkeypatch.undo()
    monkeypatch.setattr(_dispatch, "FORCE_DISPATCHER", True)
    dispatched = _run_all(backend)
    for a, b, c in zip(eager, twins, dispatched):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_the_flag_is_read_and_set_through_wgangp_fast_ops(monkeypatch):
    """wgangp_fast.ops.FORCE_DISPATCHER is the flag _run reads in _dispatch."""
    before = _dispatch.FORCE_DISPATCHER
    assert ops.FORCE_DISPATCHER is before
    monkeypatch.setattr(ops, "FORCE_DISPATCHER", not before)
    assert _dispatch.FORCE_DISPATCHER is (not before) and ops.FORCE_DISPATCHER is (not before)
    monkeypatch.undo()
    assert _dispatch.FORCE_DISPATCHER is before


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
def test_eager_calls_record_one_node_and_backward_kernels_run_bare(backend, monkeypatch):
    """No input requiring grad, or grad mode off (a first-order backward): the kernel runs bare,
    with the same values as through the autograd.Function, and records no graph. An input that
    requires grad: one node per op, of the plain Function; a first-order backward builds no graph;
    create_graph=True builds one through the backward op's Function; no twin runs."""
    applied = _count_applies(monkeypatch)
    real, fake = batch(6, (5,), torch.float32, 7), batch(6, (5,), torch.float32, 8)
    alpha = torch.tensor([0.2, 0.5, 0.9], device=real.device)
    grads = batch(6, (5,), torch.float32, 9)
    x = wgangp_fast.interpolate(real, fake, alpha, pac=2, backend=backend)
    out = wgangp_fast.gradient_norm_penalty(grads, pac=2, backend=backend)
    assert applied["eager"] == [] and x.grad_fn is None and out.grad_fn is None

    r = real.clone().requires_grad_()
    x_r = wgangp_fast.interpolate(r, fake, alpha, pac=2, backend=backend)
    assert "wgangp_fast_interpolate" in node_name(x_r.grad_fn)
    (d_r,) = torch.autograd.grad(x_r, r, torch.ones_like(x_r))
    assert torch.equal(d_r, alpha.repeat_interleave(2).reshape(6, 1).expand(6, 5))

    g = grads.clone().requires_grad_()
    out_g = wgangp_fast.gradient_norm_penalty(g, pac=2, backend=backend)
    assert FUSED_GRAD_FN in node_name(out_g.grad_fn)
    assert applied["eager"] == [_InterpolateFn, _PenaltyFn]
    (d_plain,) = torch.autograd.grad(out_g, g, retain_graph=True)
    assert d_plain.grad_fn is None
    assert applied["eager"] == [_InterpolateFn, _PenaltyFn]  # first order: the kernel ran bare
    (d_graph,) = torch.autograd.grad(out_g, g, create_graph=True)
    assert applied["eager"] == [_InterpolateFn, _PenaltyFn, _PenaltyBackwardFn]
    assert "wgangp_fast_gradient_norm_penalty_backward" in node_name(d_graph.grad_fn)
    assert torch.equal(d_plain, d_graph.detach())
    (dd,) = torch.autograd.grad(d_graph.square().sum(), g)
    hessian = torch.autograd.functional.hessian(
        lambda v: wgangp_fast.gradient_norm_penalty(v, pac=2, backend="reference"), g.detach())
    torch.testing.assert_close(dd, torch.einsum("ijkl,kl->ij", hessian, 2 * d_plain))
    with torch.no_grad():
        assert torch.equal(out, wgangp_fast.gradient_norm_penalty(g, pac=2, backend=backend))
    assert torch.equal(out, out_g.detach())
    assert torch.equal(x, _InterpolateFn.kernel(real, fake, alpha, 2,
                                                wgangp_fast.backends.resolve(backend, real.device)))
    assert applied["twin"] == []


@pytest.mark.parametrize("backend", COMPILED)
def test_kernel_ops_carry_their_own_autograd(backend):
    """torch.ops.wgangp_fast.*_kernel called directly, through the dispatcher's Autograd key:
    first and second derivatives (the autograd ops/ registers for them, the stable ABI having
    none in C++)."""
    ops_ = torch.ops.wgangp_fast
    real = batch(4, (3,), torch.float64, 11).requires_grad_()
    fake = batch(4, (3,), torch.float64, 12).requires_grad_()
    alpha = torch.tensor([0.3, 0.6], dtype=torch.float64, device=real.device, requires_grad=True)
    x = ops_.interpolate_kernel(real, fake, alpha, 2)
    assert x.grad_fn is not None
    assert torch.autograd.gradcheck(lambda r, f, a: ops_.interpolate_kernel(r, f, a, 2),
                                    (real, fake, alpha))
    assert torch.autograd.gradgradcheck(lambda r, f, a: ops_.interpolate_kernel(r, f, a, 2),
                                        (real, fake, alpha))
    grads = batch(4, (3,), torch.float64, 13).requires_grad_()
    weight = torch.tensor([0.5, 2.0], dtype=torch.float64, device=grads.device,
                          requires_grad=True)

    def pen(g, w):
        out, norms = ops_.penalty_forward_kernel(g, w, 2, 0.5, False, 0.0, 1.5, 1, 3.0)
        return out + norms.sum()

    assert torch.autograd.gradcheck(pen, (grads, weight))
    assert torch.autograd.gradgradcheck(pen, (grads, weight))


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
