"""Every backend's interpolate and gradient_norm_penalty against the float64 plain-autograd
reference (wgangp_fast.testing), over dtypes, shapes, pac and every penalty parameter."""

from __future__ import annotations

import pytest
import torch

import wgangp_fast
from wgangp_fast.testing import autograd_gradient_norm_penalty, autograd_interpolate

from ..cases import (
    DEVICE,
    PACS,
    PENALTY_PARAMS,
    SAMPLE_SHAPES,
    alpha_for,
    backend_params,
    batch,
    dtype_params,
    penalty_param_id,
    tol,
)

BACKEND = backend_params()
DTYPE = dtype_params()


def _n(pac):
    return 2 * pac if pac > 1 else 5


def _weight(m, seed=3):
    g = torch.Generator().manual_seed(seed)
    # float32 values, exact in float64 too, so the reference and the op see the same weights.
    return (torch.rand(m, generator=g) + 0.5).double().to(DEVICE)


def _kwargs(p, m, dtype=torch.float64):
    kw = dict(p)
    if kw.pop("weight", False):
        kw["weight"] = _weight(m).to(dtype)
    return kw


@pytest.mark.parametrize("backend", BACKEND)
@pytest.mark.parametrize("dtype", DTYPE)
@pytest.mark.parametrize("shape", SAMPLE_SHAPES, ids=str)
@pytest.mark.parametrize("pac", PACS)
def test_interpolate_forward_and_backward(backend, dtype, shape, pac):
    n = _n(pac)
    real, fake = batch(n, shape, dtype, seed=0), batch(n, shape, dtype, seed=1)
    alpha = alpha_for(n, pac)
    r64 = real.double().clone().requires_grad_()
    f64 = fake.double().clone().requires_grad_()
    a64 = alpha.clone().requires_grad_()
    expected = autograd_interpolate(r64, f64, a64, pac)

    r, f = real.clone().requires_grad_(), fake.clone().requires_grad_()
    a = alpha.float().clone().requires_grad_() if dtype != torch.float64 else alpha.clone().requires_grad_()
    got = wgangp_fast.interpolate(r, f, a, pac=pac, backend=backend)
    assert got.dtype == dtype and got.shape == real.shape
    torch.testing.assert_close(got.double(), expected.detach(), **tol(dtype))

    g = batch(n, shape, dtype, seed=2)
    got.backward(g)
    expected.backward(g.double())
    torch.testing.assert_close(r.grad.double(), r64.grad, **tol(dtype))
    torch.testing.assert_close(f.grad.double(), f64.grad, **tol(dtype))
    # d alpha sums a whole group: tolerance grows with the group's size.
    group = pac * real[0].numel()
    atol, rtol = tol(dtype)["atol"], tol(dtype)["rtol"]
    torch.testing.assert_close(a.grad.double(), a64.grad, atol=atol * group ** 0.5 * 4, rtol=rtol * 4)


def _spread_grads(n, shape, dtype, pac, seed):
    """Gradients whose group norms spread from about 0.2 to 2.2, so they straddle every target of
    PENALTY_PARAMS and the one-sided clip is active for some groups and not for others."""
    m = n // pac
    spread = torch.linspace(0.2, 2.2, m, dtype=torch.float64).repeat_interleave(pac)
    grads = batch(n, shape, torch.float64, seed=seed)
    grads = grads / grads.reshape(m, -1).norm(dim=1).repeat_interleave(pac).reshape(
        n, *([1] * len(shape))) * spread.reshape(n, *([1] * len(shape))).to(DEVICE)
    return grads.to(dtype)


def _check_penalty(backend, dtype, shape, pac, n, params):
    """Value, per-group norms and input gradient against the float64 reference."""
    m = n // pac
    grads = _spread_grads(n, shape, dtype, pac, seed=4)
    kw = _kwargs(params, m)
    g64 = grads.double().clone().requires_grad_()
    expected = autograd_gradient_norm_penalty(g64, pac=pac, **kw)
    norms64 = torch.sqrt((g64.detach().reshape(m, -1) * kw.get("input_scale", 1.0)).square().sum(1)
                         + kw.get("eps", 0.0))

    g = grads.clone().requires_grad_()
    kw_dt = _kwargs(params, m, dtype=torch.float32)
    got, norms = wgangp_fast.gradient_norm_penalty(g, pac=pac, backend=backend, return_norms=True,
                                                   **kw_dt)
    assert got.dtype == dtype
    assert got.shape == expected.shape
    torch.testing.assert_close(got.double(), expected.detach(), **tol(dtype))
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    assert norms.dtype == acc and norms.shape == (m,)
    torch.testing.assert_close(norms.double(), norms64, **tol(acc))

    up = torch.linspace(0.5, 1.5, expected.numel(), dtype=torch.float64).reshape(expected.shape)
    expected.backward(up.to(DEVICE))
    got.backward(up.to(DEVICE).to(dtype))
    assert torch.isfinite(g.grad).all()
    atol, rtol = tol(dtype)["atol"], tol(dtype)["rtol"]
    torch.testing.assert_close(g.grad.double(), g64.grad, atol=atol * 4, rtol=rtol * 4)


@pytest.mark.parametrize("backend", BACKEND)
@pytest.mark.parametrize("dtype", DTYPE)
@pytest.mark.parametrize("shape", SAMPLE_SHAPES, ids=str)
@pytest.mark.parametrize("pac", PACS)
@pytest.mark.parametrize("params", PENALTY_PARAMS, ids=penalty_param_id)
def test_penalty_forward_and_backward(backend, dtype, shape, pac, params):
    _check_penalty(backend, dtype, shape, pac, _n(pac), params)


# Every parameter on the layouts the grid above does not reach: many small groups (several GPU
# blocks and programs reduce the penalty), and one image group split over several blocks.
@pytest.mark.parametrize("backend", BACKEND)
@pytest.mark.parametrize("dtype", DTYPE)
@pytest.mark.parametrize("shape,pac,groups", [((7,), 2, 40), ((3, 32, 32), 10, 1)], ids=str)
@pytest.mark.parametrize("params", [p for p in PENALTY_PARAMS if p], ids=penalty_param_id)
def test_penalty_parameters_on_more_layouts(backend, dtype, shape, pac, groups, params):
    _check_penalty(backend, dtype, shape, pac, pac * groups, params)


@pytest.mark.parametrize("backend", BACKEND)
@pytest.mark.parametrize("dtype", DTYPE)
@pytest.mark.parametrize("pac", PACS)
def test_gradient_through_the_norms_output(backend, dtype, pac):
    n = 3 * pac
    grads = _spread_grads(n, (33,), dtype, pac, seed=6)
    g64 = grads.double().clone().requires_grad_()
    out64 = autograd_gradient_norm_penalty(g64, pac=pac, target=0.5)
    n64 = g64.reshape(3, -1).norm(dim=1)
    w = (torch.linspace(-1.0, 1.0, 3, dtype=torch.float64) + 0.1).to(DEVICE)
    (out64 + (n64 * w).sum()).backward()

    g = grads.clone().requires_grad_()
    out, norms = wgangp_fast.gradient_norm_penalty(g, pac=pac, target=0.5, backend=backend,
                                                   return_norms=True)
    (out.to(norms.dtype) + (norms * w.to(norms.dtype)).sum()).backward()
    atol, rtol = tol(dtype)["atol"], tol(dtype)["rtol"]
    torch.testing.assert_close(g.grad.double(), g64.grad, atol=atol * 4, rtol=rtol * 4)


@pytest.mark.parametrize("backend", BACKEND)
@pytest.mark.parametrize("dtype", DTYPE)
@pytest.mark.parametrize("pac", PACS)
@pytest.mark.parametrize("kw", [{"eps": 0.0}, {"eps": 1e-6}, {"one_sided": True},
                                {"reduction": "none", "target": 0.0}], ids=penalty_param_id)
def test_zero_gradients_are_finite(backend, dtype, pac, kw):
    grads = torch.zeros(2 * pac, 4, 3, dtype=dtype, device=DEVICE, requires_grad=True)
    out = wgangp_fast.gradient_norm_penalty(grads, pac=pac, backend=backend, **kw)
    g64 = torch.zeros(2 * pac, 4, 3, dtype=torch.float64, device=DEVICE)
    expected = autograd_gradient_norm_penalty(g64, pac=pac, **kw)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), expected, **tol(dtype))
    out.sum().backward()
    assert torch.isfinite(grads.grad).all()
    assert torch.count_nonzero(grads.grad) == 0


@pytest.mark.parametrize("backend", BACKEND)
@pytest.mark.parametrize("pac", [1, 3])
def test_non_contiguous_inputs(backend, pac):
    n = 2 * pac
    base = batch(n, (6, 9), torch.float32, seed=5)
    real = base.transpose(1, 2)  # non-contiguous view
    fake = batch(n, (9, 12), torch.float32, seed=6)[:, :, ::2]  # strided slice
    assert not real.is_contiguous() and not fake.is_contiguous()
    alpha = alpha_for(n, pac).float()
    got = wgangp_fast.interpolate(real, fake, alpha, pac=pac, backend=backend)
    torch.testing.assert_close(got, autograd_interpolate(real, fake, alpha, pac), atol=1e-6, rtol=1e-6)
    grads = real.clone().transpose(0, 1).contiguous().transpose(0, 1)  # odd strides, same values
    out = wgangp_fast.gradient_norm_penalty(grads, pac=pac, backend=backend, reduction="none")
    torch.testing.assert_close(out, autograd_gradient_norm_penalty(grads, pac=pac, reduction="none"),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKEND)
def test_large_groups_and_many_small_groups(backend):
    # One group longer than the CPU kernels' reduction chunk (16384), and many tiny groups.
    big = batch(2, (3, 100, 101), torch.float32, seed=7)
    out = wgangp_fast.gradient_norm_penalty(big, pac=2, backend=backend, target=0.0)
    torch.testing.assert_close(out.double(),
                               autograd_gradient_norm_penalty(big.double(), pac=2, target=0.0),
                               atol=1e-3, rtol=1e-5)
    small = batch(3000, (5,), torch.float32, seed=8)
    out = wgangp_fast.gradient_norm_penalty(small, pac=10, backend=backend, reduction="none")
    torch.testing.assert_close(out.double(),
                               autograd_gradient_norm_penalty(small.double(), pac=10, reduction="none"),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKEND)
def test_repeated_calls_are_bitwise_identical(backend):
    grads = batch(20, (3, 64, 64), torch.float32, seed=9)
    real, fake = batch(20, (3, 64, 64), torch.float32, 10), batch(20, (3, 64, 64), torch.float32, 11)
    alpha = alpha_for(20, 2).float()

    def run():
        g = grads.clone().requires_grad_()
        out = wgangp_fast.gradient_norm_penalty(g, pac=2, backend=backend)
        out.backward()
        r = real.clone().requires_grad_()
        x = wgangp_fast.interpolate(r, fake, alpha.clone().requires_grad_(), pac=2, backend=backend)
        x.backward(grads)
        return out.detach(), g.grad, x.detach(), r.grad

    first, second = run(), run()
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", ["cpu"])
def test_cpu_results_do_not_depend_on_thread_count(backend):
    if backend not in wgangp_fast.available_backends() or DEVICE.type != "cpu":
        pytest.skip("cpu backend on CPU only")
    grads = batch(4, (3, 128, 128), torch.float32, seed=12)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = wgangp_fast.gradient_norm_penalty(grads, pac=2, backend=backend, return_norms=True)
        torch.set_num_threads(2)
        two = wgangp_fast.gradient_norm_penalty(grads, pac=2, backend=backend, return_norms=True)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


@pytest.mark.parametrize("backend", BACKEND)
def test_float32_interpolation_is_bitwise_the_seed_formula(backend):
    if backend == "triton":
        pytest.skip("triton may contract to FMA; compared within rounding above")
    real, fake = batch(20, (33,), torch.float32, 13), batch(20, (33,), torch.float32, 14)
    torch.manual_seed(0)
    got = wgangp_fast.interpolate(real, fake, pac=10, backend=backend)
    torch.manual_seed(0)
    alpha = torch.rand(2, 1, device=DEVICE).expand(2, 33)
    alpha = alpha.unsqueeze(1).expand(2, 10, 33).contiguous().view(-1, 33)
    assert torch.equal(got, alpha * real + (1 - alpha) * fake)


@pytest.mark.parametrize("backend", BACKEND)
@pytest.mark.parametrize("pac", [1, 2])
def test_gradcheck_and_gradgradcheck(backend, pac):
    n = 2 * pac
    real = batch(n, (3,), torch.float64, 15).requires_grad_()
    fake = batch(n, (3,), torch.float64, 16).requires_grad_()
    alpha = alpha_for(n, pac).requires_grad_()

    def interp(r, f, a):
        return wgangp_fast.interpolate(r, f, a, pac=pac, backend=backend)

    assert torch.autograd.gradcheck(interp, (real, fake, alpha))
    assert torch.autograd.gradgradcheck(interp, (real, fake, alpha))

    grads = batch(n, (4,), torch.float64, 17).requires_grad_()
    weight = _weight(n // pac).requires_grad_()
    for kw in ({}, {"target": 0.3, "one_sided": True}, {"eps": 0.1, "input_scale": 2.0},
               {"reduction": "none", "target": 0.0}, {"reduction": "sum", "scale": 3.0}):
        def pen(g, w, kw=kw):
            return wgangp_fast.gradient_norm_penalty(g, pac=pac, weight=w, backend=backend, **kw)

        assert torch.autograd.gradcheck(pen, (grads, weight))
        assert torch.autograd.gradgradcheck(pen, (grads, weight))

    def pen_norms(g):
        out, norms = wgangp_fast.gradient_norm_penalty(g, pac=pac, backend=backend,
                                                       return_norms=True)
        return out, norms

    assert torch.autograd.gradcheck(pen_norms, (grads,))
    assert torch.autograd.gradgradcheck(pen_norms, (grads,))


@pytest.mark.parametrize("backend", BACKEND)
def test_opcheck(backend):
    ops = torch.ops.wgangp_fast
    real = batch(4, (5,), torch.float32, 18).requires_grad_()
    fake = batch(4, (5,), torch.float32, 19)
    alpha = alpha_for(4, 2).float().requires_grad_()
    torch.library.opcheck(ops.interpolate, (real, fake, alpha, 2, backend))
    grad = batch(4, (5,), torch.float32, 20)
    torch.library.opcheck(ops.interpolate_backward, (grad, real.detach(), fake, alpha.detach(), 2,
                                                     backend))
    grads = batch(4, (5,), torch.float32, 21).requires_grad_()
    weight = _weight(2).float().requires_grad_()
    for red in (0, 1, 2):
        torch.library.opcheck(ops.gradient_norm_penalty,
                              (grads, weight, 2, 1.0, False, 0.0, 1.0, red, 10.0, backend))
    out, norms = ops.gradient_norm_penalty(grads.detach(), None, 2, 1.0, False, 0.0, 1.0, 1, 1.0,
                                           backend)
    torch.library.opcheck(ops.gradient_norm_penalty_backward,
                          (torch.ones_like(out), None, grads.detach(), norms, None, 2, 1.0, False,
                           1.0, 1, 1.0, backend))


@pytest.mark.parametrize("backend", backend_params(["cpu", "cuda"]))
def test_opcheck_kernel_ops_with_their_autograd(backend):
    """The compiled kernel ops carry autograd (registered in Python by ops/, both orders):
    opcheck with inputs that require grad checks that registration too."""
    if (backend == "cuda") != (DEVICE.type == "cuda"):
        pytest.skip(f"the {backend} kernel ops take {backend.upper()} tensors; tests run on {DEVICE}")
    ops = torch.ops.wgangp_fast
    real = batch(4, (5,), torch.float32, 25).requires_grad_()
    fake = batch(4, (5,), torch.float32, 26).requires_grad_()
    alpha = alpha_for(4, 2).float().requires_grad_()
    torch.library.opcheck(ops.interpolate_kernel, (real, fake, alpha, 2))
    grad = batch(4, (5,), torch.float32, 27).requires_grad_()
    torch.library.opcheck(ops.interpolate_backward_kernel, (grad, real, fake, alpha, 2))
    grads = batch(4, (5,), torch.float32, 28).requires_grad_()
    weight = _weight(2).float().requires_grad_()
    for red in (0, 1, 2):
        args = (grads, weight, 2, 0.5, red == 2, 0.0, 1.0, red, 10.0)
        torch.library.opcheck(ops.penalty_forward_kernel, args)
        out, norms = ops.penalty_forward_kernel(*args)
        torch.library.opcheck(ops.penalty_backward_kernel,
                              (torch.ones_like(out).requires_grad_(), None, grads,
                               norms.detach().requires_grad_(), weight, 2, 0.5, red == 2, 1.0,
                               red, 10.0))


@pytest.mark.parametrize("backend", backend_params(["cpu", "cuda"]))
@pytest.mark.parametrize("dtype", DTYPE)
def test_opcheck_kernel_ops_every_dtype(backend, dtype):
    if (backend == "cuda") != (DEVICE.type == "cuda"):
        pytest.skip(f"the {backend} kernel ops take {backend.upper()} tensors; tests run on {DEVICE}")
    ops = torch.ops.wgangp_fast
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    real, fake, grad = (batch(6, (7,), dtype, s) for s in (30, 31, 32))
    alpha = alpha_for(6, 2, seed=33).to(acc)
    torch.library.opcheck(ops.interpolate_kernel, (real, fake, alpha, 2))
    torch.library.opcheck(ops.interpolate_backward_kernel, (grad, real, fake, alpha, 2))
    weight = _weight(3, seed=34).float()
    for red in (0, 1, 2):
        torch.library.opcheck(ops.penalty_forward_kernel,
                              (grad, weight, 2, 1.0, False, 0.0, 1.0, red, 2.0))
        out, norms = ops.penalty_forward_kernel(grad, weight, 2, 1.0, False, 0.0, 1.0, red, 2.0)
        torch.library.opcheck(ops.penalty_backward_kernel,
                              (torch.ones_like(out), norms * 0.5, grad, norms, weight, 2, 1.0,
                               False, 1.0, red, 2.0))


@pytest.mark.parametrize("backend", BACKEND)
def test_compile_first_order(backend):
    if backend == "triton" and DEVICE.type == "cpu":
        pytest.skip("torch.compile does not trace the Triton interpreter")

    def step(real, fake, alpha, grads):
        x = wgangp_fast.interpolate(real, fake, alpha, pac=2, backend=backend)
        return x.sum() + wgangp_fast.gradient_norm_penalty(grads, pac=2, backend=backend)

    args = (batch(4, (6,), torch.float32, 22), batch(4, (6,), torch.float32, 23),
            alpha_for(4, 2).float(), batch(4, (6,), torch.float32, 24))
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(*args), step(*args))
