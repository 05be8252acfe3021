"""gradient_norm_penalty: scale * reduce_j(w_j * u_j^2), u_j = ||input_scale * grads[group j]|| -
target (clipped at 0 when one_sided), with the per-group norms n_j as a second output.

The torch.library ops `wgangp_fast::gradient_norm_penalty` and
`wgangp_fast::gradient_norm_penalty_backward` (the backend's name their last argument), their
fakes and autograd (the first order a fused kernel, the second in differentiable PyTorch ops over
the [M]-sized per-group formulas), the autograd.Functions (eager and twin), the fakes and autograd
of the compiled kernel ops, and the public function. _dispatch.py chooses the path a call takes.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import _validate as V
from .. import backends
from ..backends.reference import (
    MEAN,
    NONE,
    acc_dtype,
    excess,
    groups,
    penalty_coef,
    phi_grad,
    reduction_factor,
)
from ._dispatch import _register_kernel_op, _run, _twin


@torch.library.custom_op("wgangp_fast::gradient_norm_penalty", mutates_args=())
def _penalty(grads: Tensor, weight: Optional[Tensor], pac: int, target: float, one_sided: bool,
             eps: float, input_scale: float, reduction: int, scale: float,
             backend: str) -> Tuple[Tensor, Tensor]:
    out, norms = backends.get(backend).penalty_forward(grads, weight, pac, target, one_sided, eps,
                                                       input_scale, reduction, scale)
    return out, norms


@_penalty.register_fake
def _(grads, weight, pac, target, one_sided, eps, input_scale, reduction, scale, backend):
    m = grads.shape[0] // pac
    out = grads.new_empty((m,) if reduction == NONE else ())
    return out, grads.new_empty((m,), dtype=acc_dtype(grads.dtype))


@torch.library.custom_op("wgangp_fast::gradient_norm_penalty_backward", mutates_args=())
def _penalty_backward(grad_out: Tensor, grad_norms: Optional[Tensor], grads: Tensor, norms: Tensor,
                      weight: Optional[Tensor], pac: int, target: float, one_sided: bool,
                      input_scale: float, reduction: int, scale: float, backend: str) -> Tensor:
    return backends.get(backend).penalty_backward(grad_out, grad_norms, grads, norms, weight, pac,
                                                  target, one_sided, input_scale, reduction, scale)


@_penalty_backward.register_fake
def _(grad_out, grad_norms, grads, norms, weight, pac, target, one_sided, input_scale, reduction,
      scale, backend):
    return torch.empty_like(grads, memory_format=torch.contiguous_format)


def _penalty_setup(ctx, inputs, output):
    grads, weight, pac, target, one_sided, eps, input_scale, reduction, scale, backend = inputs
    _, norms = output
    ctx.save_for_backward(grads, weight, norms)
    ctx.params = (pac, target, one_sided, input_scale, reduction, scale, backend)
    ctx.set_materialize_grads(False)


def _penalty_grad(ctx, g_out, g_norms):
    grads, weight, norms = ctx.saved_tensors
    pac, target, one_sided, input_scale, reduction, scale, backend = ctx.params
    if g_out is None and g_norms is None:
        return (None,) * 10
    if g_out is None:
        m = norms.shape[0]
        g_out = grads.new_zeros((m,) if reduction == NONE else ())
    d_grads = d_weight = None
    need = ctx.needs_input_grad
    if need[0]:
        d_grads = _run(_penalty_backward, _PenaltyBackwardFn, g_out, g_norms, grads, norms, weight,
                       pac, target, one_sided, input_scale, reduction, scale, backend, ctx=ctx)
    if weight is not None and need[1]:
        u = excess(norms, target, one_sided)
        # d phi_j / d w_j = u_j^2. The mean's 1/M divides a tensor here, not the Python float
        # `scale` (as phi_grad does): under dynamic shapes M is symbolic, and a symbolic float
        # factor fails AOTAutograd's scalar pass (KeyError in _tensorify_python_scalars, torch
        # 2.14; opcheck's test_aot_dispatch_dynamic with a weight that requires grad).
        g_phi = g_out.to(norms.dtype) * scale
        if reduction == MEAN:
            g_phi = g_phi / norms.shape[0]
        d_weight = (g_phi * u * u).to(weight.dtype).reshape(weight.shape)
    return (d_grads, d_weight) + (None,) * 8


_penalty.register_autograd(_penalty_grad, setup_context=_penalty_setup)


def _penalty_backward_setup(ctx, inputs, output):
    (grad_out, grad_norms, grads, norms, weight, pac, target, one_sided, input_scale, reduction,
     scale) = inputs[:11]  # and the backend, except for the kernel op
    ctx.save_for_backward(grad_out, grad_norms, grads, norms, weight)
    ctx.params = (pac, target, one_sided, input_scale, reduction, scale)
    ctx.set_materialize_grads(False)


def _penalty_backward_grad(ctx, gy):
    # y = c_j * v over group j, with c_j = a_j * K_j, a_j = g_phi_j * w_j * 2 u_j + g_norm_j and
    # K_j = s^2 / n_j (0 where n_j == 0). The chain rule through these [M]-sized formulas, in
    # differentiable ops, so higher orders keep working.
    grad_out, grad_norms, grads, norms, weight = ctx.saved_tensors
    pac, target, one_sided, input_scale, reduction, scale = ctx.params
    if gy is None:
        return (None,) * 12
    n = norms
    acc = n.dtype
    m = n.shape[0]
    s2 = input_scale * input_scale
    v = groups(grads, pac).to(acc)
    g = groups(gy, pac).to(acc)
    c = penalty_coef(grad_out, grad_norms, n, weight, target, one_sided, input_scale,
                           reduction, scale)
    need = ctx.needs_input_grad
    d_grads = (g * c.reshape(-1, 1)).to(grads.dtype).reshape(grads.shape) if need[2] else None
    dc = (v * g).sum(1)
    # n != 0 rather than n > 0: a NaN norm must give NaN here too (see penalty_coef).
    nonzero = n != 0
    safe_n = torch.where(nonzero, n, torch.ones_like(n))
    k = torch.where(nonzero, s2 / safe_n, torch.zeros_like(n))
    dk = torch.where(nonzero, -s2 / (safe_n * safe_n), torch.zeros_like(n))
    u = excess(n, target, one_sided)
    du = (n - target > 0).to(acc) if one_sided else torch.ones_like(n)
    w = weight.reshape(-1).to(acc) if weight is not None else torch.ones_like(n)
    g_phi = phi_grad(grad_out, reduction, m, scale, acc)
    a = g_phi * w * 2 * u + (grad_norms.to(acc) if grad_norms is not None else 0)
    d_grad_out = d_grad_norms = d_norms = d_weight = None
    if need[0]:
        d_gphi = dc * k * w * 2 * u * (scale * reduction_factor(reduction, m))
        d_grad_out = d_gphi if reduction == NONE else d_gphi.sum()
        d_grad_out = d_grad_out.to(grad_out.dtype).reshape(grad_out.shape)
    if grad_norms is not None and need[1]:
        d_grad_norms = (dc * k).to(grad_norms.dtype)
    if need[3]:
        d_norms = dc * (a * dk + k * g_phi * w * 2 * du)
    if weight is not None and need[4]:
        d_weight = (dc * k * g_phi * 2 * u).to(weight.dtype).reshape(weight.shape)
    return (d_grad_out, d_grad_norms, d_grads, d_norms, d_weight) + (None,) * 7


_penalty_backward.register_autograd(_penalty_backward_grad, setup_context=_penalty_backward_setup)

# ---------------------------------------------------------------------------------------------
# The autograd.Function twins (see _dispatch) and the compiled kernel ops
# ---------------------------------------------------------------------------------------------

_PenaltyFn = _twin(
    "wgangp_fast_gradient_norm_penalty", "gradient_norm_penalty", 2,
    lambda grads, weight, pac, target, one_sided, eps, input_scale, reduction, scale, backend:
    tuple(backends.get(backend).penalty_forward(grads, weight, pac, target, one_sided, eps,
                                                input_scale, reduction, scale)),
    _penalty_setup, _penalty_grad)
_PenaltyBackwardFn = _twin(
    "wgangp_fast_gradient_norm_penalty_backward", "gradient_norm_penalty_backward", 5,
    lambda grad_out, grad_norms, grads, norms, weight, pac, target, one_sided, input_scale,
    reduction, scale, backend: backends.get(backend).penalty_backward(
        grad_out, grad_norms, grads, norms, weight, pac, target, one_sided, input_scale, reduction,
        scale),
    _penalty_backward_setup, _penalty_backward_grad)


def _kernel_fake(grads, weight, pac, target, one_sided, eps, input_scale, reduction, scale):
    m = grads.shape[0] // pac
    out = grads.new_empty((m,) if reduction == NONE else ())
    return out, grads.new_empty((m,), dtype=acc_dtype(grads.dtype))


def _kernel_backward_fake(grad_out, grad_norms, grads, norms, weight, pac, target, one_sided,
                          input_scale, reduction, scale):
    return torch.empty_like(grads, memory_format=torch.contiguous_format)


_register_kernel_op("penalty_forward_kernel", _kernel_fake, _penalty_setup, _penalty_grad, 9)
_register_kernel_op("penalty_backward_kernel", _kernel_backward_fake, _penalty_backward_setup,
                    _penalty_backward_grad, 11)

# ---------------------------------------------------------------------------------------------
# The public function
# ---------------------------------------------------------------------------------------------


def gradient_norm_penalty(grads: Tensor, *, pac: int = 1, target: float = 1.0,
                          one_sided: bool = False, eps: float = 0.0, input_scale: float = 1.0,
                          weight: Optional[Tensor] = None, reduction: str = "mean",
                          scale: float = 1.0, backend: str = "auto",
                          return_norms: bool = False):
    """scale * reduce_j(w_j * u_j^2), u_j = ||input_scale * grads[group j]|| - target (clipped at 0
    when one_sided), the norm taken over each group of `pac` consecutive samples.

    With return_norms, also returns the per-group norms n_j (float32, or float64 for float64
    grads), differentiable like the penalty.
    """
    V.tensor("grads", grads)
    m = V.pac(pac, grads.shape[0], "grads")
    pac = int(pac)
    target = V.finite("target", target, minimum=0.0)
    eps = V.finite("eps", eps, minimum=0.0)
    input_scale = V.finite("input_scale", input_scale, positive=True)
    # A scale that requires grad (a learned weight) multiplies the result outside the kernels,
    # where autograd sees it; the penalty is linear in scale, so this is the same value.
    scale_t = None
    if isinstance(scale, Tensor) and scale.requires_grad:
        scale_t, scale = V.scale_tensor("scale", scale), 1.0
    else:
        scale = V.finite("scale", scale)
    one_sided = one_sided if type(one_sided) is bool else V.flag("one_sided", one_sided)
    red = V.reduction(reduction)
    if weight is not None:
        weight = V.group_vector("weight", weight, m, grads)
    name = backends.resolve(backend, grads.device)
    out, norms = _run(_penalty, _PenaltyFn, grads, weight, pac, target, one_sided, eps, input_scale,
                      red, scale, name)
    if scale_t is not None:
        out = out * scale_t.to(device=out.device, dtype=out.dtype)
    return (out, norms) if return_norms else out
