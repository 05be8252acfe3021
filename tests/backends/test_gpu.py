"""What only a GPU run can check, beyond the shared op matrix (tests/cases.py: test_ops.py and the
other matrix files run on CUDA tensors with WGANGP_FAST_TEST_DEVICE=cuda, the cuda-matrix stage
of scripts/gpu_check.sh): both GPU backends (cuda, triton) on large layouts against the float64
plain-autograd references (wgangp_fast.testing) and bitwise repeatable on them, misaligned and
non-contiguous inputs, more than 2^31 elements, streams, CUDA graphs, no host synchronisation, a
second device and the kernel ops' errors. Skipped without a CUDA device.

Dry run (`make test` does one): with WGANGP_FAST_GPU_TESTS_DRY_RUN=1 and TRITON_INTERPRET=1 the
triton half runs on CPU tensors under the Triton interpreter, so a bug in these tests shows before
a GPU session."""

from __future__ import annotations

import os

import pytest
import torch

import wgangp_fast
from wgangp_fast.testing import autograd_gradient_norm_penalty, autograd_interpolate

from ..cases import DTYPES, tol

DRY_RUN = (os.environ.get("WGANGP_FAST_GPU_TESTS_DRY_RUN") == "1"
           and os.environ.get("TRITON_INTERPRET") == "1" and not torch.cuda.is_available())
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not (torch.cuda.is_available() or DRY_RUN),
                                 reason="needs a CUDA device")]

DEV = torch.device("cpu" if DRY_RUN else "cuda")
# What the dry run cannot exercise: the compiled cuda backend and CUDA runtime features.
NEEDS_CUDA = pytest.mark.skipif(DRY_RUN, reason="dry run on CPU: needs a CUDA device")


def _gpu_backends(names=("cuda", "triton")):
    params = []
    for name in names:
        marks = []
        if DRY_RUN and name != "triton":
            marks.append(pytest.mark.skip(reason=f"dry run on CPU: backend {name} needs a GPU"))
        elif torch.cuda.is_available() and name not in wgangp_fast.available_backends():
            marks.append(pytest.mark.skip(
                reason=f"backend {name}: {wgangp_fast.backend_status()[name]}"))
        params.append(pytest.param(name, marks=marks, id=name))
    return params


BACKENDS = _gpu_backends()
CUDA_ONLY = _gpu_backends(("cuda",))
DTYPE = [pytest.param(dt, id=str(dt).replace("torch.", ""),
                     marks=[pytest.mark.skipif(DRY_RUN and dt == torch.bfloat16,
                                               reason="the Triton interpreter has no bfloat16 "
                                                      "arithmetic")])
         for dt in DTYPES]


def acc_of(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def rand(shape, dtype, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype).to(DEV)


def uniform(m, seed, low=0.0, high=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(m, generator=g, dtype=torch.float64) * (high - low) + low).to(DEV)


def ref_norms(grads64, pac, eps=0.0, input_scale=1.0):
    m = grads64.shape[0] // pac
    return torch.sqrt((grads64.reshape(m, -1) * input_scale).square().sum(1) + eps)


def close(got, expected, dtype, scale=1.0):
    atol, rtol = tol(dtype)["atol"], tol(dtype)["rtol"]
    torch.testing.assert_close(got.double(), expected.double(), atol=atol * scale,
                               rtol=rtol * scale)


def penalty_grads(n, shape, dtype, pac, seed):
    """Gradients scaled so that group norms straddle the targets (both signs of u_j occur)."""
    d = pac * torch.Size(shape).numel()
    return rand((n, *shape), dtype, seed, scale=1.2 / d ** 0.5 * pac ** 0.5)


def misaligned(t, offset=1):
    """A contiguous copy of t whose data pointer is `offset` elements past an allocation start
    (so not 16-byte aligned for offset * itemsize % 16 != 0)."""
    buf = torch.empty(t.numel() + offset, dtype=t.dtype, device=t.device)
    view = buf[offset:].view(t.shape)
    view.copy_(t)
    assert view.is_contiguous() and view.data_ptr() % 16 != 0
    return view


# ---------------------------------------------------------------------------------------------
# Determinism, layouts, sizes
# ---------------------------------------------------------------------------------------------


def _round_trip(backend, real, fake, alpha, grads, pac, **kw):
    """Every output of both ops and their backwards, as a list of tensors. detach() keeps the
    inputs' storage (and so their alignment); clone() would not."""
    r = real.detach().requires_grad_()
    a = alpha.detach().requires_grad_()
    x = wgangp_fast.interpolate(r, fake, a, pac=pac, backend=backend)
    x.backward(grads)
    g = grads.detach().requires_grad_()
    out, norms = wgangp_fast.gradient_norm_penalty(g, pac=pac, backend=backend,
                                                   return_norms=True, **kw)
    (out.sum() + norms.sum()).backward()
    return [x.detach(), r.grad, a.grad, out.detach(), norms.detach(), g.grad]


# (per-sample shape, N, pac, dtype): one huge group split over many blocks, many small groups,
# medium groups, groups smaller than a 16-byte vector, and G not a multiple of the vector width.
LAYOUTS = [
    ((3, 1024, 1024), 1, 1, torch.float32),
    ((3, 1024, 1024), 1, 1, torch.bfloat16),
    ((150,), 50_000, 1, torch.float16),
    ((15,), 50_000, 10, torch.float32),
    ((3, 64, 64), 64, 1, torch.bfloat16),
    ((3, 64, 64), 40, 2, torch.float64),
    ((3,), 1001, 1, torch.float16),
    ((257,), 999, 3, torch.float32),
]


def _layout_id(layout):
    shape, n, pac, dtype = layout
    return f"{n}x{'x'.join(map(str, shape))}-pac{pac}-{str(dtype).replace('torch.', '')}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS, ids=_layout_id)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_repeated_calls_are_bitwise_identical(backend, layout, reduction):
    shape, n, pac, dtype = layout
    real, fake = rand((n, *shape), dtype, 40), rand((n, *shape), dtype, 41)
    grads = penalty_grads(n, shape, dtype, pac, seed=42)
    alpha = uniform(n // pac, 43).to(acc_of(dtype))
    first = _round_trip(backend, real, fake, alpha, grads, pac, reduction=reduction)
    second = _round_trip(backend, real, fake, alpha, grads, pac, reduction=reduction)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS, ids=_layout_id)
def test_large_layouts_match_reference(backend, layout):
    shape, n, pac, dtype = layout
    m = n // pac
    group = pac * torch.Size(shape).numel()
    real, fake = rand((n, *shape), dtype, 50), rand((n, *shape), dtype, 51)
    grads = penalty_grads(n, shape, dtype, pac, seed=52)
    alpha = uniform(m, 53)
    weight = uniform(m, 54, 0.5, 1.5).float().double()  # float32 values, exact in both
    x, d_real, d_alpha, out, norms, d_grads = _round_trip(
        backend, real, fake, alpha.to(acc_of(dtype)), grads, pac, target=0.8,
        weight=weight.float())

    r64, a64 = real.double().clone().requires_grad_(), alpha.clone().requires_grad_()
    x64 = autograd_interpolate(r64, fake.double(), a64, pac)
    x64.backward(grads.double())
    g64 = grads.double().clone().requires_grad_()
    out64 = autograd_gradient_norm_penalty(g64, pac=pac, target=0.8, weight=weight)
    n64 = ref_norms(g64, pac)
    (out64 + n64.sum()).backward()

    close(x, x64.detach(), dtype)
    close(d_real, r64.grad, dtype)
    atol, rtol = tol(dtype)["atol"], tol(dtype)["rtol"]
    torch.testing.assert_close(d_alpha.double(), a64.grad, atol=atol * group ** 0.5 * 4,
                               rtol=rtol * 4)
    close(out, out64.detach(), dtype)
    close(norms, n64.detach(), acc_of(dtype), scale=10)
    close(d_grads, g64.grad, dtype, scale=4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPE)
@pytest.mark.parametrize("shape,pac", [((1,), 1), ((7,), 2), ((1023,), 10), ((3, 33, 31), 1)],
                         ids=str)
def test_misaligned_and_non_contiguous_inputs(backend, dtype, shape, pac):
    n = 3 * pac
    real, fake = rand((n, *shape), dtype, 60), rand((n, *shape), dtype, 61)
    grads = penalty_grads(n, shape, dtype, pac, seed=62)
    alpha = uniform(3, 63).to(acc_of(dtype))
    aligned = _round_trip(backend, real, fake, alpha, grads, pac, reduction="none")

    # Offsets of one and three elements: misaligned pointers, differently from each other.
    mis = _round_trip(backend, misaligned(real, 1), misaligned(fake, 3), alpha,
                      misaligned(grads, 1), pac, reduction="none")
    # Elementwise results do not depend on the load width; sums may add in another order.
    names = ["x", "d_real", "d_alpha", "out", "norms", "d_grads"]
    for name, a, b in zip(names, aligned, mis):
        if backend == "cuda" and name in ("x", "d_real"):
            assert torch.equal(a, b), name
        else:
            close(b, a, dtype if name != "norms" else acc_of(dtype), scale=4)

    # Non-contiguous views of the same values.
    t_real = real.transpose(0, -1).contiguous().transpose(0, -1)
    t_fake = torch.stack([fake, fake], dim=-1)[..., 0]
    t_grads = grads.transpose(0, -1).contiguous().transpose(0, -1)
    if real.dim() > 1 and real.shape[-1] > 1:
        assert not t_real.is_contiguous() and not t_grads.is_contiguous()
    assert not t_fake.is_contiguous()
    strided = _round_trip(backend, t_real, t_fake, alpha, t_grads, pac, reduction="none")
    for name, a, b in zip(names, aligned, strided):
        if name in ("x", "d_real"):
            assert torch.equal(a, b), name
        else:
            close(b, a, dtype if name != "norms" else acc_of(dtype), scale=4)


@NEEDS_CUDA
@pytest.mark.parametrize("backend", BACKENDS)
def test_more_than_2_31_elements(backend):
    per_sample = 2 ** 30 + 64  # two samples: 2^31 + 128 elements
    numel = 2 * per_sample
    need = 4 * numel * 2 + (2 << 30)  # real, fake, x, d_grads in float16, plus masks
    free, _ = torch.cuda.mem_get_info()
    if free < need:
        pytest.skip(f"needs {need / 2 ** 30:.1f} GiB of free GPU memory, {free / 2 ** 30:.1f} free")
    torch.cuda.empty_cache()
    real = torch.ones(2, per_sample, dtype=torch.float16, device=DEV)
    fake = torch.zeros_like(real)
    alpha = torch.tensor([0.25, 0.75], device=DEV)
    x = wgangp_fast.interpolate(real, fake, alpha, pac=1, backend=backend)
    del real, fake
    assert bool((x[0] == 0.25).all()) and bool((x[1] == 0.75).all())
    # A marker past element 2^31 that a 32-bit index would drop or misplace.
    x[1, -1] = 1000.0
    s = 2.0 ** -12
    x.requires_grad_()
    out, norms = wgangp_fast.gradient_norm_penalty(x, pac=1, target=0.0, input_scale=s,
                                                   reduction="none", backend=backend,
                                                   return_norms=True)
    sq0 = per_sample * 0.25 ** 2
    sq1 = (per_sample - 1) * 0.75 ** 2 + 1000.0 ** 2
    expected = torch.tensor([sq0, sq1], dtype=torch.float64).mul(s * s).sqrt()
    # The marker moves the second norm by 8e-4 relative; float32 sums stay within 1e-5.
    torch.testing.assert_close(norms.double().cpu(), expected, atol=0, rtol=1e-5)
    torch.testing.assert_close(out.double().cpu(), expected.square(), atol=0, rtol=2e-3)
    # With target 0, d x = upstream * 2 s^2 * x exactly (powers of two): x / 1024 here.
    out.backward(torch.full((2,), 2.0 ** 13, dtype=torch.float16, device=DEV))
    d = x.grad
    assert float(d[1, -1]) == 1000.0 / 1024
    assert bool((d[1, :-1] == 0.75 / 1024).all()) and bool((d[0] == 0.25 / 1024).all())


# ---------------------------------------------------------------------------------------------
# Streams, graphs, synchronisation, devices, errors (cuda backend)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", CUDA_ONLY)
def test_runs_on_the_current_stream(backend):
    real, fake = rand((64, 3, 32, 32), torch.float32, 70), rand((64, 3, 32, 32), torch.float32, 71)
    grads = penalty_grads(64, (3, 32, 32), torch.float32, 1, seed=72)
    alpha = uniform(64, 73).float()
    expected = _round_trip(backend, real, fake, alpha, grads, 1)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        got = _round_trip(backend, real, fake, alpha, grads, 1)
    torch.cuda.current_stream().wait_stream(side)
    for a, b in zip(expected, got):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", CUDA_ONLY)
def test_forward_and_backward_do_not_synchronise(backend):
    grads = penalty_grads(20, (3, 16, 16), torch.float16, 2, seed=80).requires_grad_()
    real, fake = rand((20, 48), torch.float16, 81), rand((20, 48), torch.float16, 82)
    alpha = uniform(10, 83).float().requires_grad_()
    weight = uniform(10, 84, 0.5, 1.5).float()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = wgangp_fast.gradient_norm_penalty(grads, pac=2, weight=weight, backend=backend)
        out.backward()
        x = wgangp_fast.interpolate(real, fake, alpha, pac=2, backend=backend)
        x.backward(torch.ones_like(x))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(grads.grad).all() and torch.isfinite(alpha.grad).all()


@pytest.mark.parametrize("backend", CUDA_ONLY)
@pytest.mark.parametrize("shape,n", [((3, 256, 256), 1), ((150,), 4096)], ids=str)
def test_cuda_graph_capture_and_replay(backend, shape, n):
    static = penalty_grads(n, shape, torch.float32, 1, seed=90)
    other = penalty_grads(n, shape, torch.float32, 1, seed=91)

    def step():
        return wgangp_fast.gradient_norm_penalty(static, backend=backend, return_norms=True)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out, norms = step()
    static.copy_(other)
    graph.replay()
    torch.cuda.synchronize()
    want_out, want_norms = wgangp_fast.gradient_norm_penalty(other, backend=backend,
                                                             return_norms=True)
    assert torch.equal(out, want_out) and torch.equal(norms, want_norms)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
@pytest.mark.parametrize("backend", CUDA_ONLY)
def test_second_device(backend):
    dev = torch.device("cuda", 1)
    grads = penalty_grads(8, (100,), torch.float32, 2, seed=95).to(dev)
    out, norms = wgangp_fast.gradient_norm_penalty(grads, pac=2, backend=backend,
                                                   return_norms=True)
    assert out.device == dev and norms.device == dev
    close(norms, ref_norms(grads.double(), 2), torch.float32)


@pytest.mark.parametrize("backend", CUDA_ONLY)
def test_kernel_ops_reject_mixed_devices_and_wrong_dtypes(backend):
    ops = torch.ops.wgangp_fast
    real = rand((4, 3), torch.float32, 96)
    alpha = uniform(2, 97).float()
    with pytest.raises(RuntimeError, match="CUDA tensors, got fake on cpu"):
        ops.interpolate_kernel(real, real.cpu(), alpha, 2)
    with pytest.raises(RuntimeError, match="accumulation dtype"):
        ops.interpolate_kernel(real, real, alpha.double(), 2)
    with pytest.raises(RuntimeError, match="multiple of pac"):
        ops.penalty_forward_kernel(real, None, 3, 1.0, False, 0.0, 1.0, 1, 1.0)
    with pytest.raises(RuntimeError, match="weight must hold M=2"):
        ops.penalty_forward_kernel(real, alpha[:1], 2, 1.0, False, 0.0, 1.0, 1, 1.0)
