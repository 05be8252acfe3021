"""Triton-specific checks beyond the shared op matrix (tests/ops/test_ops.py): the tile choices, the
multi-program and two-stage paths that the matrix's small batches do not reach, float64 host
scalars, zero-norm groups, argument errors, and (without a GPU) that the kernels compile for
sm_90 with IEEE-rounded division and square root and no atomics."""

from __future__ import annotations

import re

import pytest
import torch

pytest.importorskip("triton")

from wgangp_fast.backends import reference as P  # noqa: E402
from wgangp_fast.backends import triton as T  # noqa: E402

from ..cases import DEVICE, INTERPRETED  # noqa: E402

if DEVICE.type == "cuda":
    RUNS_KERNELS = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                        reason="needs a CUDA device")]
else:
    RUNS_KERNELS = [pytest.mark.triton_interp, pytest.mark.skipif(
        not INTERPRETED, reason="Triton kernels on CPU tensors need TRITON_INTERPRET=1 "
                                "(pytest -m triton_interp with it set)")]


def runs_kernels(fn):
    for mark in reversed(RUNS_KERNELS):
        fn = mark(fn)
    return fn


TOL = {torch.float64: 1e-12, torch.float32: 2e-6, torch.float16: 2e-3}


def _close(got, expected, dtype, scale=1.0):
    tol = TOL[dtype] * scale
    torch.testing.assert_close(got.double().cpu(), expected.double().cpu(), atol=tol, rtol=tol)


def _rand(shape, dtype, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype).to(DEVICE)


def _is_pow2(n):
    return n >= 1 and n & (n - 1) == 0


# ---------------------------------------------------------------------------------------------
# Tile choices (plain Python: run everywhere)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m,g", [(1, 1), (5, 7), (2, 150), (50_000, 150), (7, 1023), (3, 4097),
                                 (2, 16384), (2, 16385), (64, 3 * 1024 * 1024), (10, 40970)])
def test_tiles_are_powers_of_two_and_cover_every_group(m, g):
    t = T._tiles(m, g)
    for size in (t.rows, t.block_g, t.block_s, t.fin_rows, t.total_block, t.num_warps):
        assert _is_pow2(size)
    assert t.block_g >= 2 and t.block_s >= 2 and t.total_block >= 2
    assert t.rows * t.block_g <= T._TILE
    assert t.rows <= max(1, 2 ** (m - 1).bit_length())
    assert t.piece * t.splits >= g > t.piece * (t.splits - 1)
    if t.splits > 1:
        assert t.rows == 1 and t.piece == T._PIECE and t.piece % t.block_g == 0
    else:
        assert t.piece == g


def test_tiles_fit_both_regimes():
    # Many small groups (CTGAN: pac 10 x 15 columns): several groups per program, few idle lanes.
    t = T._tiles(50_000, 150)
    assert t.splits == 1 and t.rows > 1
    assert 150 / (t.block_g * -(-150 // t.block_g)) >= 0.9
    # One 3x1024x1024 image per group: each group spread over many programs, summed in stage 2.
    t = T._tiles(8, 3 * 1024 * 1024)
    assert t.splits == 3 * 1024 * 1024 // T._PIECE and t.rows == 1
    # A tiny batch is one program (the interpreter runs programs one at a time).
    t = T._tiles(5, 7)
    assert t.splits == 1 and t.rows >= 5


def test_host_floats_round_trip_through_their_bits():
    for x in (0.7, -3.3, 1.0 / 65536, 5e-324, -0.0, 1e300):
        bits = T._bits(x)
        assert -(2 ** 63) <= bits < 2 ** 63
        back = torch.tensor([bits], dtype=torch.int64).view(torch.float64).item()
        assert back == x and str(back) == str(x)


# ---------------------------------------------------------------------------------------------
# Kernels (TRITON_INTERPRET=1 on CPU, or a GPU)
# ---------------------------------------------------------------------------------------------


def _check_all_four(n, shape, pac, dtype, seed=0, weight=True, **kw):
    """The four triton functions against the reference backend's, on the same inputs."""
    acc = P.acc_dtype(dtype)
    m = n // pac
    real, fake, up = (_rand((n, *shape), dtype, seed + i) for i in range(3))
    alpha = torch.rand(m, generator=torch.Generator().manual_seed(seed), dtype=acc).to(DEVICE)
    group = pac * torch.Size(shape).numel()
    _close(T.interpolate(real, fake, alpha, pac), P.interpolate(real, fake, alpha, pac), dtype)
    got = T.interpolate_backward(up, real, fake, alpha, pac)
    ref = P.interpolate_backward(up, real, fake, alpha, pac)
    for a, b in zip(got, ref):
        assert a.dtype == b.dtype and a.shape == b.shape and a.is_contiguous()
        _close(a, b, dtype, scale=group ** 0.5)

    grads = _rand((n, *shape), dtype, seed + 5, scale=1.2 / group ** 0.5 * pac ** 0.5)
    w = (torch.rand(m, generator=torch.Generator().manual_seed(seed)) + 0.5).to(DEVICE)
    w = w if weight else None
    args = dict(target=None, one_sided=True, eps=1e-4, input_scale=1.5, scale=7.0)
    args.update(kw)
    if args["target"] is None:
        # The median norm: the one-sided clip acts on about half the groups.
        norms = P.penalty_forward(grads, None, pac, 0.0, False, args["eps"], args["input_scale"],
                                  P.NONE, 1.0)[1]
        args["target"] = norms.median().item()
    for red in (P.NONE, P.MEAN, P.SUM):
        fwd = (w, pac, args["target"], args["one_sided"], args["eps"], args["input_scale"], red,
               args["scale"])
        out, norms = T.penalty_forward(grads, *fwd)
        ref_out, ref_norms = P.penalty_forward(grads, *fwd)
        assert out.dtype == dtype and out.shape == ref_out.shape
        assert norms.dtype == acc and norms.shape == (m,)
        _close(out, ref_out, dtype)
        _close(norms, ref_norms, dtype)
        g_out = _rand(ref_out.shape, dtype, seed + 7)
        g_norms = _rand((m,), acc, seed + 8)
        bwd = (w, pac, args["target"], args["one_sided"], args["input_scale"], red,
               args["scale"])
        got = T.penalty_backward(g_out, g_norms, grads, norms, *bwd)
        ref = P.penalty_backward(g_out, g_norms, grads, ref_norms, *bwd)
        assert got.dtype == dtype and got.shape == grads.shape
        _close(got, ref, dtype, scale=4.0)


# Tiny tiles put small batches through every path that large batches take on a GPU.
SMALL_TILES = dict(_PIECE=32, _TILE=16, _MAX_BLOCK_G=16, _MAX_BLOCK_S=2)


@runs_kernels
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("n,shape,pac", [
    (24, (50,), 2),     # split groups: 4 pieces (2 loop steps in stage 2), 2 stage-2 programs
    (12, (3, 5, 7), 3),  # split groups of 315 elements, pac 3
    (40, (7,), 1),      # whole groups: 20 first-stage programs, then the final sum (2 steps)
    (3, (1,), 1),       # G = 1
])
def test_multi_program_and_two_stage_paths(monkeypatch, dtype, n, shape, pac):
    for name, value in SMALL_TILES.items():
        monkeypatch.setattr(T, name, value)
    _check_all_four(n, shape, pac, dtype)


@runs_kernels
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_many_small_groups_with_default_tiles(dtype):
    # CTGAN's pac 10 with 15 columns: G = 150; 320 groups span several programs.
    _check_all_four(3200, (15,), 10, dtype, one_sided=False, target=1.0)


@runs_kernels
def test_split_and_multi_program_results_are_bitwise_repeatable(monkeypatch):
    for name, value in SMALL_TILES.items():
        monkeypatch.setattr(T, name, value)
    grads = _rand((24, 50), torch.float32, 11)
    w = torch.rand(12).to(DEVICE) + 0.5

    def run():
        out, norms = T.penalty_forward(grads, w, 2, 1.0, False, 0.0, 1.0, P.MEAN, 10.0)
        d = T.penalty_backward(torch.ones_like(out), None, grads, norms, w, 2, 1.0, False, 1.0,
                               P.MEAN, 10.0)
        d_alpha = T.interpolate_backward(grads, grads, grads.flip(0), w, 2)[2]
        return out, norms, d, d_alpha

    for a, b in zip(run(), run()):
        assert torch.equal(a, b)


@runs_kernels
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16], ids=str)
def test_zero_norm_groups_get_a_zero_subgradient(dtype):
    grads = _rand((8, 5), dtype, 12)
    grads[0:2] = 0  # group 0 (pac 2) is all zeros
    grads[6:8] = 0  # group 3 too
    out, norms = T.penalty_forward(grads, None, 2, 1.0, False, 0.0, 1.0, P.NONE, 1.0)
    assert norms[0] == 0 and norms[3] == 0
    assert torch.isfinite(out).all()
    g_norms = torch.ones(4, dtype=norms.dtype, device=DEVICE)
    d = T.penalty_backward(torch.ones_like(out), g_norms, grads, norms, None, 2, 1.0, False, 1.0,
                           P.NONE, 1.0)
    assert torch.isfinite(d).all()
    assert torch.count_nonzero(d[0:2]) == 0 and torch.count_nonzero(d[6:8]) == 0
    assert torch.count_nonzero(d[2:6]) > 0
    _close(d, P.penalty_backward(torch.ones_like(out), g_norms, grads, norms, None, 2, 1.0, False,
                                 1.0, P.NONE, 1.0), dtype)


@runs_kernels
def test_float64_host_scalars_are_not_rounded_to_float32():
    # Triton passes float arguments as float32; these values would be off by ~1e-8 relative.
    grads = _rand((6, 11), torch.float64, 13)
    w = torch.rand(3, dtype=torch.float64).to(DEVICE) + 0.5
    fwd = (w, 2, 0.7, True, 1e-7, 1.0 / 3.0)
    for red, scale in ((P.NONE, -3.3), (P.MEAN, 0.1), (P.SUM, 2.0 ** -30)):
        out, norms = T.penalty_forward(grads, *fwd, red, scale)
        ref_out, ref_norms = P.penalty_forward(grads, *fwd, red, scale)
        torch.testing.assert_close(out, ref_out, atol=0, rtol=1e-14)
        torch.testing.assert_close(norms, ref_norms, atol=0, rtol=1e-14)
        g_out = torch.ones_like(out)
        d = T.penalty_backward(g_out, None, grads, norms, w, 2, 0.7, True, 1.0 / 3.0, red, scale)
        ref = P.penalty_backward(g_out, None, grads, ref_norms, w, 2, 0.7, True, 1.0 / 3.0, red,
                                 scale)
        torch.testing.assert_close(d, ref, atol=1e-300, rtol=1e-13)


@runs_kernels
def test_strided_per_group_vectors_and_upstream_gradients():
    grads = _rand((6, 4), torch.float32, 14)
    w = _rand((3, 2), torch.float32, 15).abs()[:, 1]  # stride 2
    g_out = _rand((3, 3), torch.float32, 16)[:, 0]
    assert not w.is_contiguous() and not g_out.is_contiguous()
    out, norms = T.penalty_forward(grads, w, 2, 1.0, False, 0.0, 1.0, P.NONE, 1.0)
    _close(out, P.penalty_forward(grads, w.contiguous(), 2, 1.0, False, 0.0, 1.0, P.NONE, 1.0)[0],
           torch.float32)
    d = T.penalty_backward(g_out, None, grads, norms, w, 2, 1.0, False, 1.0, P.NONE, 1.0)
    _close(d, P.penalty_backward(g_out.contiguous(), None, grads, norms, w.contiguous(), 2, 1.0,
                                 False, 1.0, P.NONE, 1.0), torch.float32)


@runs_kernels
def test_bad_arguments_name_what_is_wrong():
    x = _rand((4, 3), torch.float32, 17)
    alpha = torch.rand(2, device=DEVICE)
    with pytest.raises(ValueError, match="multiple of pac=3"):
        T.interpolate(x, x, alpha, 3)
    with pytest.raises(TypeError, match="alpha must be in the accumulation dtype"):
        T.interpolate(x, x, alpha.double(), 2)
    with pytest.raises(ValueError, match="alpha must hold M=4"):
        T.interpolate(x, x, alpha, 1)
    with pytest.raises(ValueError, match="fake must match real"):
        T.interpolate(x, x.double(), alpha, 2)
    with pytest.raises(ValueError, match="weight must hold M=2"):
        T.penalty_forward(x, alpha[:1], 2, 1.0, False, 0.0, 1.0, P.MEAN, 1.0)
    with pytest.raises(ValueError, match="reduction must be"):
        T.penalty_forward(x, None, 2, 1.0, False, 0.0, 1.0, 3, 1.0)


# ---------------------------------------------------------------------------------------------
# Compiled code for a GPU, checked without one
# ---------------------------------------------------------------------------------------------


def _compile_for_sm90(fn, types, constexprs, divisible_by_16=()):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = fn.arg_names
    signature = {n: "constexpr" if n in constexprs else types[n] for n in names}
    src = ASTSource(fn=fn, signature=signature,
                    constexprs={(names.index(k),): v for k, v in constexprs.items()},
                    attrs={(names.index(n),): [["tt.divisibility", 16]] for n in divisible_by_16})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8})


def _kernel_specs(dt, a, acc):
    """(kernel, argument types, constexprs, arguments divisible by 16) for each kernel, with
    data in dtype dt and accumulation dtype a (Triton type names) / acc (tl dtype)."""
    data = "*" + dt
    part = "*" + a
    ints = dict(M="i32", G="i32", PIECE="i32", S="i32")
    bits = dict(target_bits="i64", eps_bits="i64", input_scale_bits="i64", scale_bits="i64")
    flags = dict(ONE_SIDED=True, REDUCTION=1, HAS_WEIGHT=True)
    return {
        "interpolate": (T._interpolate_kernel, dict(
            real_ptr=data, fake_ptr=data, alpha_ptr=part, x_ptr=data, **ints),
            dict(ROWS=64, BLOCK_G=32, ACC=acc), ()),
        "interpolate_backward": (T._interpolate_backward_kernel, dict(
            grad_ptr=data, real_ptr=data, fake_ptr=data, alpha_ptr=part, d_real_ptr=data,
            d_fake_ptr=data, partial_ptr=part, **ints),
            dict(ROWS=1, BLOCK_G=2048, ACC=acc), ()),
        "row_sum": (T._row_sum_kernel, dict(partial_ptr=part, out_ptr=part, M="i32", S="i32"),
                    dict(ROWS=8, BLOCK_S=256, ACC=acc), ()),
        "sumsq": (T._penalty_sumsq_kernel, dict(
            grads_ptr=data, partial_ptr=part, norms_ptr=part, out_ptr=data, phi_ptr=part,
            weight_ptr="*fp32", **ints, **bits),
            dict(FINISH=True, FINAL=False, ROWS=64, BLOCK_G=32, ACC=acc, **flags), ()),
        "finish": (T._penalty_finish_kernel, dict(
            partial_ptr=part, norms_ptr=part, out_ptr=data, phi_ptr=part, weight_ptr="*fp32",
            M="i32", S="i32", target_bits="i64", eps_bits="i64", scale_bits="i64"),
            dict(FINAL=False, ROWS=8, BLOCK_S=256, ACC=acc, **flags), ()),
        "total": (T._penalty_total_kernel, dict(
            phi_ptr=part, out_ptr=data, P="i32", M="i32", scale_bits="i64"),
            dict(REDUCTION=1, BLOCK=1024, ACC=acc), ()),
        "penalty_backward": (T._penalty_backward_kernel, dict(
            grad_out_ptr=data, grad_norms_ptr=part, grads_ptr=data, norms_ptr=part,
            weight_ptr="*fp32", d_grads_ptr=data, **ints, target_bits="i64",
            input_scale_bits="i64", scale_bits="i64"),
            dict(HAS_GRAD_NORMS=True, ROWS=1, BLOCK_G=2048, ACC=acc, **flags),
            ("grads_ptr", "d_grads_ptr", "G", "PIECE")),
    }


@pytest.mark.skipif(INTERPRETED, reason="TRITON_INTERPRET=1 replaces the compiler")
@pytest.mark.parametrize("dt", ["fp16", "bf16", "fp32", "fp64"])
def test_kernels_compile_for_sm90_without_atomics_and_with_ieee_rounding(dt):
    pytest.importorskip("triton.backends.nvidia")
    import triton.language as tl

    a, acc = ("fp64", tl.float64) if dt == "fp64" else ("fp32", tl.float32)
    specs = _kernel_specs(dt, a, acc)
    # Every kernel once for half precision; the penalty's hot pair for the other dtypes.
    names = list(specs) if dt == "fp16" else ["sumsq", "penalty_backward"]
    ptx = {}
    for name in names:
        fn, types, constexprs, aligned = specs[name]
        ptx[name] = _compile_for_sm90(fn, types, constexprs, aligned).asm["ptx"]
        assert not re.search(r"\b(atom|red)\.", ptx[name]), f"{name}: no atomics"
    suffix = a.replace("fp", "f")
    assert f"sqrt.rn.{suffix}" in ptx["sumsq"]
    assert f"div.rn.{suffix}" in ptx["penalty_backward"]
    # Groups whose size is a multiple of 16 are read and written 16 bytes at a time.
    assert re.search(r"ld\.global(\.\w+)*\.v[248]\.", ptx["penalty_backward"])
    assert re.search(r"st\.global(\.\w+)*\.v[248]\.", ptx["penalty_backward"])
