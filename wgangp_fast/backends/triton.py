"""The `triton` backend: Triton kernels for interpolate and gradient_norm_penalty.

Same four functions, signatures and semantics as the `cpu` backend (csrc/cpu, with the per-group
formulas of csrc/common/penalty_math.h) and the `reference` backend (backends/reference.py);
autograd lives in ops/. Layering: @triton.jit kernels, then the host launchers, whose tile choices are all
made in `_tiles`.

Every kernel sees a batch of N samples as an [M, G] row-major matrix: M = N / pac groups of
G = pac * D contiguous elements. A program owns a block of ROWS whole groups (many small groups:
tabular data, pac * D of a few hundred) and, when groups are long (one large image), only a piece
of PIECE columns of one group: per-group sums over pieces go to a workspace that a second kernel
adds up in a fixed order. No float atomics anywhere, and every tile depends on the shape only, so
repeated calls are bitwise identical. Math is float32 (float64 for float64 inputs), cast once at
the store; offsets are 64-bit.

Host floats (target, eps, input_scale, scale) travel as the int64 bit pattern of a double and are
decoded in the kernel: Triton passes float arguments as float32, which would round them for the
float64 kernels.
"""

from __future__ import annotations

import contextlib
import functools
import struct
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .reference import acc_dtype

NONE, MEAN, SUM = 0, 1, 2


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _decode(bits, ACC: tl.constexpr):
    return bits.to(tl.int64).to(tl.float64, bitcast=True).to(ACC)


@triton.jit
def _div(a, b, ACC: tl.constexpr):
    # float32 `/` compiles to an approximate division; div_rn rounds as the CPU kernels do.
    if ACC == tl.float64:
        return a / b
    else:
        return tl.div_rn(a, b)


@triton.jit
def _sqrt(x, ACC: tl.constexpr):
    # tl.sqrt is approximate in float32 (IEEE-rounded in float64); sqrt_rn rounds as std::sqrt.
    if ACC == tl.float64:
        return tl.sqrt(x)
    else:
        return tl.sqrt_rn(x)


@triton.jit
def _tile(M, G, PIECE, S, ROWS: tl.constexpr):
    """This program's groups (rows) and its `width` columns from lo in each. Element (i, k) is at
    base + local[i] + k: the 64-bit base once per program, 32-bit offsets inside the tile (it
    spans ROWS whole groups of at most _PIECE elements, or one piece of one group).

    The grid is 1-D, S programs per block of rows: the y and z grid sizes are limited to 65535.
    """
    pid = tl.program_id(0).to(tl.int64)
    pid_r = pid // S
    pid_s = pid - pid_r * S
    row0 = pid_r * ROWS
    lo = pid_s * PIECE
    width = tl.minimum(G - lo, PIECE).to(tl.int32)
    r = tl.arange(0, ROWS)
    local = r * G
    return row0 + r, row0 + r < M, pid_r, pid_s, row0 * G + lo, local, width


@triton.jit
def _sum_rows(
    partial_ptr,  # [M, S] per-piece sums, accumulation dtype
    rows, row_mask, S,
    ROWS: tl.constexpr, BLOCK_S: tl.constexpr, ACC: tl.constexpr,
):
    """Row sums of partial[rows, :S] in a fixed order (second stage of a split reduction)."""
    acc = tl.zeros([ROWS, BLOCK_S], dtype=ACC)
    base = rows[:, None] * S
    for c in range(0, S, BLOCK_S):
        cols = c + tl.arange(0, BLOCK_S)
        mask = row_mask[:, None] & (cols < S)[None, :]
        acc += tl.load(partial_ptr + base + cols[None, :], mask=mask, other=0).to(ACC)
    return tl.sum(acc, axis=1)


@triton.jit
def _penalty_rows(
    ss,          # [ROWS] sums of (input_scale * grads)^2 of this program's groups
    rows, row_mask, pid,
    norms_ptr,   # [M] output norms, accumulation dtype
    out_ptr,     # [M] (reduction none) or []: the penalty, in the grads dtype
    phi_ptr,     # [programs] per-program sums of phi (reduction mean/sum, not FINAL)
    weight_ptr,  # [M] per-group weights (read when HAS_WEIGHT)
    M, target, eps, scale,
    ONE_SIDED: tl.constexpr, REDUCTION: tl.constexpr, HAS_WEIGHT: tl.constexpr,
    FINAL: tl.constexpr, ACC: tl.constexpr,
):
    """n_j, phi_j = w_j * u_j^2 and the output (penalty_math.h: group_penalty)."""
    n = _sqrt(ss + eps, ACC)
    tl.store(norms_ptr + rows, n, mask=row_mask)
    u = n - target
    if ONE_SIDED:
        u = tl.where(u < 0, 0.0, u)
    if HAS_WEIGHT:
        w = tl.load(weight_ptr + rows, mask=row_mask, other=0).to(ACC)
        phi = w * u * u
    else:
        phi = u * u
    if REDUCTION == 0:
        tl.store(out_ptr + rows, (scale * phi).to(out_ptr.dtype.element_ty), mask=row_mask)
    else:
        total = tl.sum(tl.where(row_mask, phi, 0.0), axis=0)
        if FINAL:
            res = scale * total
            if REDUCTION == 1:
                res = res * _div(1.0, M.to(ACC), ACC)
            tl.store(out_ptr, res.to(out_ptr.dtype.element_ty))
        else:
            tl.store(phi_ptr + pid, total)


@triton.jit
def _interpolate_kernel(
    real_ptr,   # [M, G]
    fake_ptr,   # [M, G]
    alpha_ptr,  # [M], accumulation dtype
    x_ptr,      # [M, G] output, dtype of real
    M, G, PIECE, S,
    ROWS: tl.constexpr, BLOCK_G: tl.constexpr, ACC: tl.constexpr,
):
    rows, row_mask, pid_r, pid_s, base, local, width = _tile(M, G, PIECE, S, ROWS)
    a = tl.load(alpha_ptr + rows, mask=row_mask, other=0).to(ACC)[:, None]
    b = 1 - a
    real_ptr += base
    fake_ptr += base
    x_ptr += base
    for c in range(0, width, BLOCK_G):
        cols = c + tl.arange(0, BLOCK_G)
        offs = local[:, None] + cols[None, :]
        mask = row_mask[:, None] & (cols < width)[None, :]
        r = tl.load(real_ptr + offs, mask=mask, other=0).to(ACC)
        f = tl.load(fake_ptr + offs, mask=mask, other=0).to(ACC)
        # The eager formula's order: alpha * real + (1 - alpha) * fake.
        t = a * r
        v = b * f
        tl.store(x_ptr + offs, (t + v).to(x_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _interpolate_backward_kernel(
    grad_ptr,     # [M, G] upstream gradient of x
    real_ptr,     # [M, G]
    fake_ptr,     # [M, G]
    alpha_ptr,    # [M], accumulation dtype
    d_real_ptr,   # [M, G] output
    d_fake_ptr,   # [M, G] output
    partial_ptr,  # [M, S] per-piece sums of (real - fake) * grad (d_alpha itself when S == 1)
    M, G, PIECE, S,
    ROWS: tl.constexpr, BLOCK_G: tl.constexpr, ACC: tl.constexpr,
):
    rows, row_mask, pid_r, pid_s, base, local, width = _tile(M, G, PIECE, S, ROWS)
    a = tl.load(alpha_ptr + rows, mask=row_mask, other=0).to(ACC)[:, None]
    b = 1 - a
    grad_ptr += base
    real_ptr += base
    fake_ptr += base
    d_real_ptr += base
    d_fake_ptr += base
    acc = tl.zeros([ROWS, BLOCK_G], dtype=ACC)
    for c in range(0, width, BLOCK_G):
        cols = c + tl.arange(0, BLOCK_G)
        offs = local[:, None] + cols[None, :]
        mask = row_mask[:, None] & (cols < width)[None, :]
        g = tl.load(grad_ptr + offs, mask=mask, other=0).to(ACC)
        r = tl.load(real_ptr + offs, mask=mask, other=0).to(ACC)
        f = tl.load(fake_ptr + offs, mask=mask, other=0).to(ACC)
        tl.store(d_real_ptr + offs, (a * g).to(d_real_ptr.dtype.element_ty), mask=mask)
        tl.store(d_fake_ptr + offs, (b * g).to(d_fake_ptr.dtype.element_ty), mask=mask)
        acc += (r - f) * g
    tl.store(partial_ptr + rows * S + pid_s, tl.sum(acc, axis=1), mask=row_mask)


@triton.jit
def _row_sum_kernel(
    partial_ptr,  # [M, S] per-piece sums, accumulation dtype
    out_ptr,      # [M] output
    M, S,
    ROWS: tl.constexpr, BLOCK_S: tl.constexpr, ACC: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    row_mask = rows < M
    total = _sum_rows(partial_ptr, rows, row_mask, S, ROWS, BLOCK_S, ACC)
    tl.store(out_ptr + rows, total.to(out_ptr.dtype.element_ty), mask=row_mask)


# Host floats: no recompilation for each value (nor int-1 specialisation) of their bit patterns.
# M: converted to a float for the mean, so never specialised to a constant.
@triton.jit(do_not_specialize=["M", "target_bits", "eps_bits", "input_scale_bits", "scale_bits"])
def _penalty_sumsq_kernel(
    grads_ptr,    # [M, G]
    partial_ptr,  # [M, S] per-piece sums of squares (written unless FINISH)
    norms_ptr,    # [M] output norms (written when FINISH)
    out_ptr,      # [M] or []: the penalty (written when FINISH)
    phi_ptr,      # [programs] per-program sums of phi (FINISH, reducing, not FINAL)
    weight_ptr,   # [M] (read when HAS_WEIGHT)
    M, G, PIECE, S,
    target_bits, eps_bits, input_scale_bits, scale_bits,
    ONE_SIDED: tl.constexpr, REDUCTION: tl.constexpr, HAS_WEIGHT: tl.constexpr,
    FINISH: tl.constexpr, FINAL: tl.constexpr,
    ROWS: tl.constexpr, BLOCK_G: tl.constexpr, ACC: tl.constexpr,
):
    rows, row_mask, pid_r, pid_s, base, local, width = _tile(M, G, PIECE, S, ROWS)
    s = _decode(input_scale_bits, ACC)
    grads_ptr += base
    acc = tl.zeros([ROWS, BLOCK_G], dtype=ACC)
    for c in range(0, width, BLOCK_G):
        cols = c + tl.arange(0, BLOCK_G)
        mask = row_mask[:, None] & (cols < width)[None, :]
        x = s * tl.load(grads_ptr + local[:, None] + cols[None, :], mask=mask, other=0).to(ACC)
        acc += x * x
    ss = tl.sum(acc, axis=1)
    if FINISH:
        _penalty_rows(ss, rows, row_mask, pid_r, norms_ptr, out_ptr, phi_ptr, weight_ptr, M,
                      _decode(target_bits, ACC), _decode(eps_bits, ACC),
                      _decode(scale_bits, ACC), ONE_SIDED, REDUCTION, HAS_WEIGHT, FINAL, ACC)
    else:
        tl.store(partial_ptr + rows * S + pid_s, ss, mask=row_mask)


@triton.jit(do_not_specialize=["M", "target_bits", "eps_bits", "scale_bits"])
def _penalty_finish_kernel(
    partial_ptr,  # [M, S] per-piece sums of squares
    norms_ptr,    # [M] output norms
    out_ptr,      # [M] or []: the penalty
    phi_ptr,      # [programs] per-program sums of phi (reducing, not FINAL)
    weight_ptr,   # [M] (read when HAS_WEIGHT)
    M, S,
    target_bits, eps_bits, scale_bits,
    ONE_SIDED: tl.constexpr, REDUCTION: tl.constexpr, HAS_WEIGHT: tl.constexpr,
    FINAL: tl.constexpr, ROWS: tl.constexpr, BLOCK_S: tl.constexpr, ACC: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * ROWS + tl.arange(0, ROWS)
    row_mask = rows < M
    ss = _sum_rows(partial_ptr, rows, row_mask, S, ROWS, BLOCK_S, ACC)
    _penalty_rows(ss, rows, row_mask, pid, norms_ptr, out_ptr, phi_ptr, weight_ptr, M,
                  _decode(target_bits, ACC), _decode(eps_bits, ACC),
                  _decode(scale_bits, ACC), ONE_SIDED, REDUCTION, HAS_WEIGHT, FINAL, ACC)


@triton.jit(do_not_specialize=["M", "scale_bits"])
def _penalty_total_kernel(
    phi_ptr,  # [P] per-program sums of phi, accumulation dtype
    out_ptr,  # []: the penalty
    P, M, scale_bits,
    REDUCTION: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr,
):
    acc = tl.zeros([BLOCK], dtype=ACC)
    for c in range(0, P, BLOCK):
        cols = c + tl.arange(0, BLOCK)
        acc += tl.load(phi_ptr + cols, mask=cols < P, other=0).to(ACC)
    res = _decode(scale_bits, ACC) * tl.sum(acc, axis=0)
    if REDUCTION == 1:
        res = res * _div(1.0, M.to(ACC), ACC)
    tl.store(out_ptr, res.to(out_ptr.dtype.element_ty))


@triton.jit(do_not_specialize=["M", "target_bits", "input_scale_bits", "scale_bits"])
def _penalty_backward_kernel(
    grad_out_ptr,    # [M] (reduction none) or []: upstream gradient of the penalty
    grad_norms_ptr,  # [M] upstream gradient of the norms (read when HAS_GRAD_NORMS)
    grads_ptr,       # [M, G]
    norms_ptr,       # [M] norms from the forward
    weight_ptr,      # [M] (read when HAS_WEIGHT)
    d_grads_ptr,     # [M, G] output
    M, G, PIECE, S,
    target_bits, input_scale_bits, scale_bits,
    ONE_SIDED: tl.constexpr, REDUCTION: tl.constexpr, HAS_WEIGHT: tl.constexpr,
    HAS_GRAD_NORMS: tl.constexpr, ROWS: tl.constexpr, BLOCK_G: tl.constexpr,
    ACC: tl.constexpr,
):
    rows, row_mask, pid_r, pid_s, base, local, width = _tile(M, G, PIECE, S, ROWS)
    # The per-group coefficient, from device tensors (penalty_math.h: penalty_backward_coef).
    n = tl.load(norms_ptr + rows, mask=row_mask, other=0).to(ACC)
    s = _decode(input_scale_bits, ACC)
    r = _decode(scale_bits, ACC)
    if REDUCTION == 1:
        r = r * _div(1.0, M.to(ACC), ACC)
    if REDUCTION == 0:
        g_out = tl.load(grad_out_ptr + rows, mask=row_mask, other=0).to(ACC)
    else:
        g_out = tl.load(grad_out_ptr).to(ACC)
    g_phi = r * g_out
    u = n - _decode(target_bits, ACC)
    if ONE_SIDED:
        u = tl.where(u < 0, 0.0, u)
    if HAS_WEIGHT:
        w = tl.load(weight_ptr + rows, mask=row_mask, other=0).to(ACC)
        a = g_phi * w * 2 * u
    else:
        a = g_phi * 2 * u
    if HAS_GRAD_NORMS:
        a = a + tl.load(grad_norms_ptr + rows, mask=row_mask, other=0).to(ACC)
    # n == 0: the subgradient is 0 (torch.linalg.vector_norm's choice), never 0/0. A NaN norm is
    # not zero: its NaN coefficient reaches the whole group, as in eager autograd.
    zero = n == 0
    coef = tl.where(zero, 0.0, _div(a * (s * s), tl.where(zero, 1.0, n), ACC))
    coef = coef[:, None]
    grads_ptr += base
    d_grads_ptr += base
    for c in range(0, width, BLOCK_G):
        cols = c + tl.arange(0, BLOCK_G)
        offs = local[:, None] + cols[None, :]
        mask = row_mask[:, None] & (cols < width)[None, :]
        v = tl.load(grads_ptr + offs, mask=mask, other=0).to(ACC)
        tl.store(d_grads_ptr + offs, (coef * v).to(d_grads_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------
# Host launchers
# ---------------------------------------------------------------------------------------------

# A group longer than this is split into pieces of this many elements over several programs.
_PIECE = 16384
# Elements a program loads per loop step and tensor (ROWS * BLOCK_G): 8 per thread at 8 warps.
# 4096 made ptxas spill in interpolate_backward (five [M, G] streams) for sm_90.
_TILE = 2048
# Widest column block for groups that are not split.
_MAX_BLOCK_G = 2048
# Widest block of the second-stage sums.
_MAX_BLOCK_S = 1024


class _Tiles(NamedTuple):
    rows: int       # groups per program (first stage)
    block_g: int    # columns per loop step
    piece: int      # columns per program (G when groups are not split)
    splits: int     # programs per group
    num_warps: int
    fin_rows: int   # groups per program of the second stage (split groups only)
    block_s: int    # partial sums per loop step of the second stage
    fin_programs: int
    total_block: int  # per-program phi sums per loop step of the final sum


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _column_block(g: int) -> int:
    """The widest power of two that pads a row of g elements by at most 1/8 (fewest masked lanes
    when g is awkward, e.g. 150 -> 32); else the one with the least padding."""
    top = min(_pow2(g), _MAX_BLOCK_G)
    best, best_pad = top, -(-g // top) * top
    b = top
    while b >= max(2, min(top, 16)):
        padded = -(-g // b) * b
        if padded * 8 <= g * 9:
            return b
        if padded < best_pad:
            best, best_pad = b, padded
        b //= 2
    return best


@functools.lru_cache(maxsize=1024)
def _tiles(m: int, g: int) -> _Tiles:
    """Every tile choice of this module. They depend on the shape only (never on the device), so
    results are the same on every GPU and every call."""
    if g > _PIECE:
        rows, block_g, piece = 1, _TILE, _PIECE
    else:
        block_g = max(2, _column_block(g))
        rows = max(1, min(_TILE // block_g, _pow2(m)))
        piece = g
    splits = -(-g // piece)
    num_warps = 8 if rows * block_g >= _TILE else 4
    block_s = max(2, min(_pow2(splits), _MAX_BLOCK_S))
    fin_rows = max(1, min(_TILE // block_s, _pow2(m)))
    fin_programs = -(-m // fin_rows)
    first_programs = -(-m // rows)
    partials = fin_programs if splits > 1 else first_programs
    total_block = max(2, min(_pow2(partials), _TILE))
    return _Tiles(rows, block_g, piece, splits, num_warps, fin_rows, block_s, fin_programs,
                  total_block)


def _bits(x: float) -> int:
    return struct.unpack("<q", struct.pack("<d", float(x)))[0]


def _tl_acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _guard(t: Tensor):
    # Triton launches on the current CUDA device; the tensors may live on another one. Switching
    # costs microseconds per op, so only when they do.
    if t.is_cuda and t.device.index != torch.cuda.current_device():
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()


def _geometry(t: Tensor, pac: int, name: str):
    """(M, G) of a batch grouped by pac consecutive samples."""
    if t.dim() < 1 or t.shape[0] == 0 or t.numel() == 0:
        raise ValueError(f"wgangp_fast: {name} must be a non-empty batch [N, ...], "
                         f"got shape {list(t.shape)}")
    n = t.shape[0]
    if pac < 1 or n % pac != 0:
        raise ValueError(f"wgangp_fast: the batch size N={n} must be a multiple of pac={pac}")
    return n // pac, t.numel() // n * pac


def _vector(v: Tensor | None, m: int, name: str, like: Tensor) -> Tensor | None:
    if v is None:
        return None
    if v.numel() != m:
        raise ValueError(f"wgangp_fast: {name} must hold M={m} values, got {v.numel()}")
    if v.device != like.device:
        raise ValueError(f"wgangp_fast: {name} must be on {like.device}, got {v.device}")
    return v.reshape(m).contiguous()


def _like(name: str, t: Tensor, real: Tensor) -> None:
    if t.shape != real.shape or t.dtype != real.dtype or t.device != real.device:
        raise ValueError(f"wgangp_fast: {name} must match real ({list(real.shape)}, {real.dtype}, "
                         f"{real.device}), got {list(t.shape)}, {t.dtype}, {t.device}")


def _pair(real: Tensor, fake: Tensor, alpha: Tensor, pac: int):
    _like("fake", fake, real)
    if alpha.dtype != acc_dtype(real.dtype):
        raise TypeError(f"wgangp_fast: alpha must be in the accumulation dtype "
                        f"{acc_dtype(real.dtype)}, got {alpha.dtype}")
    m, g = _geometry(real, pac, "real")
    return m, g, _vector(alpha, m, "alpha", real)


def _check_reduction(reduction: int) -> None:
    if reduction not in (NONE, MEAN, SUM):
        raise ValueError(f"wgangp_fast: reduction must be 0 (none), 1 (mean) or 2 (sum), "
                         f"got {reduction!r}")


def interpolate(real: Tensor, fake: Tensor, alpha: Tensor, pac: int) -> Tensor:
    m, g, alpha = _pair(real, fake, alpha, pac)
    real, fake = real.contiguous(), fake.contiguous()
    x = torch.empty_like(real, memory_format=torch.contiguous_format)
    t = _tiles(m, g)
    with _guard(real):
        _interpolate_kernel[(triton.cdiv(m, t.rows) * t.splits,)](
            real, fake, alpha, x, m, g, t.piece, t.splits,
            ROWS=t.rows, BLOCK_G=t.block_g, ACC=_tl_acc(real.dtype),
            num_warps=t.num_warps)
    return x


def interpolate_backward(grad: Tensor, real: Tensor, fake: Tensor, alpha: Tensor, pac: int):
    m, g, alpha = _pair(real, fake, alpha, pac)
    _like("grad", grad, real)
    grad, real, fake = grad.contiguous(), real.contiguous(), fake.contiguous()
    d_real = torch.empty_like(real, memory_format=torch.contiguous_format)
    d_fake = torch.empty_like(d_real)
    d_alpha = torch.empty(m, dtype=alpha.dtype, device=alpha.device)
    t = _tiles(m, g)
    acc = _tl_acc(real.dtype)
    partial = d_alpha if t.splits == 1 else torch.empty(m, t.splits, dtype=alpha.dtype,
                                                        device=alpha.device)
    with _guard(real):
        _interpolate_backward_kernel[(triton.cdiv(m, t.rows) * t.splits,)](
            grad, real, fake, alpha, d_real, d_fake, partial, m, g, t.piece, t.splits,
            ROWS=t.rows, BLOCK_G=t.block_g, ACC=acc, num_warps=t.num_warps)
        if t.splits > 1:
            _row_sum_kernel[(t.fin_programs,)](
                partial, d_alpha, m, t.splits,
                ROWS=t.fin_rows, BLOCK_S=t.block_s, ACC=acc, num_warps=4)
    return d_real, d_fake, d_alpha


def penalty_forward(grads: Tensor, weight: Tensor | None, pac: int, target: float,
                    one_sided: bool, eps: float, input_scale: float, reduction: int,
                    scale: float):
    _check_reduction(reduction)
    m, g = _geometry(grads, pac, "grads")
    weight = _vector(weight, m, "weight", grads)
    grads = grads.contiguous()
    acc = acc_dtype(grads.dtype)
    dev = grads.device
    norms = torch.empty(m, dtype=acc, device=dev)
    out = torch.empty((m,) if reduction == NONE else (), dtype=grads.dtype, device=dev)
    t = _tiles(m, g)
    first_programs = triton.cdiv(m, t.rows)
    finish = t.splits == 1
    programs = first_programs if finish else t.fin_programs
    final = reduction == NONE or programs == 1
    phi = norms if final else torch.empty(programs, dtype=acc, device=dev)
    partial = norms if finish else torch.empty(m, t.splits, dtype=acc, device=dev)
    w = weight if weight is not None else norms
    flags = dict(ONE_SIDED=bool(one_sided), REDUCTION=int(reduction),
                 HAS_WEIGHT=weight is not None, ACC=_tl_acc(acc))
    with _guard(grads):
        _penalty_sumsq_kernel[(first_programs * t.splits,)](
            grads, partial, norms, out, phi, w, m, g, t.piece, t.splits,
            _bits(target), _bits(eps), _bits(input_scale), _bits(scale),
            FINISH=finish, FINAL=final, ROWS=t.rows, BLOCK_G=t.block_g,
            num_warps=t.num_warps, **flags)
        if not finish:
            _penalty_finish_kernel[(t.fin_programs,)](
                partial, norms, out, phi, w, m, t.splits,
                _bits(target), _bits(eps), _bits(scale),
                FINAL=final, ROWS=t.fin_rows, BLOCK_S=t.block_s, num_warps=4, **flags)
        if not final:
            _penalty_total_kernel[(1,)](
                phi, out, programs, m, _bits(scale),
                REDUCTION=int(reduction), BLOCK=t.total_block, ACC=_tl_acc(acc), num_warps=4)
    return out, norms


def penalty_backward(grad_out: Tensor, grad_norms: Tensor | None, grads: Tensor,
                     norms: Tensor, weight: Tensor | None, pac: int, target: float,
                     one_sided: bool, input_scale: float, reduction: int,
                     scale: float) -> Tensor:
    _check_reduction(reduction)
    m, g = _geometry(grads, pac, "grads")
    norms = _vector(norms, m, "norms", grads)
    weight = _vector(weight, m, "weight", grads)
    grad_norms = _vector(grad_norms, m, "grad_norms", grads)
    grad_out = _vector(grad_out, m if reduction == NONE else 1, "grad_out", grads)
    grads = grads.contiguous()
    d_grads = torch.empty_like(grads, memory_format=torch.contiguous_format)
    t = _tiles(m, g)
    with _guard(grads):
        _penalty_backward_kernel[(triton.cdiv(m, t.rows) * t.splits,)](
            grad_out, grad_norms if grad_norms is not None else norms, grads, norms,
            weight if weight is not None else norms, d_grads, m, g, t.piece, t.splits,
            _bits(target), _bits(input_scale), _bits(scale),
            ONE_SIDED=bool(one_sided), REDUCTION=int(reduction), HAS_WEIGHT=weight is not None,
            HAS_GRAD_NORMS=grad_norms is not None, ROWS=t.rows, BLOCK_G=t.block_g,
            ACC=_tl_acc(grads.dtype), num_warps=t.num_warps)
    return d_grads
