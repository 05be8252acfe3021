"""interpolate: x_hat = alpha * real + (1 - alpha) * fake per group of `pac` samples.

The torch.library ops `wgangp_fast::interpolate` and `wgangp_fast::interpolate_backward` (the
backend's name their last argument), their fakes and autograd (the first order a fused kernel,
the second in differentiable PyTorch ops), the autograd.Functions (eager and twin), the fakes and
autograd of the compiled kernel ops, and the public function. _dispatch.py chooses the path a call
takes.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import _validate as V
from .. import backends
from ..backends.reference import acc_dtype, groups
from ._dispatch import _register_kernel_op, _run, _twin


@torch.library.custom_op("wgangp_fast::interpolate", mutates_args=())
def _interpolate(real: Tensor, fake: Tensor, alpha: Tensor, pac: int, backend: str) -> Tensor:
    return backends.get(backend).interpolate(real, fake, alpha, pac)


@_interpolate.register_fake
def _(real, fake, alpha, pac, backend):
    return torch.empty_like(real, memory_format=torch.contiguous_format)


@torch.library.custom_op("wgangp_fast::interpolate_backward", mutates_args=())
def _interpolate_backward(grad: Tensor, real: Tensor, fake: Tensor, alpha: Tensor, pac: int,
                          backend: str) -> Tuple[Tensor, Tensor, Tensor]:
    return tuple(backends.get(backend).interpolate_backward(grad, real, fake, alpha, pac))


@_interpolate_backward.register_fake
def _(grad, real, fake, alpha, pac, backend):
    like = torch.empty_like(real, memory_format=torch.contiguous_format)
    return like, torch.empty_like(like), alpha.new_empty(alpha.shape)


def _interpolate_setup(ctx, inputs, output):
    real, fake, alpha, pac, backend = inputs
    ctx.save_for_backward(real, fake, alpha)
    ctx.pac, ctx.backend = pac, backend


def _interpolate_grad(ctx, grad):
    real, fake, alpha = ctx.saved_tensors
    d_real, d_fake, d_alpha = _run(_interpolate_backward, _InterpolateBackwardFn,
                                   grad.contiguous(), real, fake, alpha, ctx.pac, ctx.backend,
                                   ctx=ctx)
    need = ctx.needs_input_grad
    return (d_real if need[0] else None, d_fake if need[1] else None,
            d_alpha if need[2] else None, None, None)


_interpolate.register_autograd(_interpolate_grad, setup_context=_interpolate_setup)


def _interpolate_backward_setup(ctx, inputs, output):
    grad, real, fake, alpha, pac = inputs[:5]  # and the backend, except for the kernel op
    ctx.save_for_backward(grad, real, fake, alpha)
    ctx.pac = pac
    ctx.set_materialize_grads(False)


def _interpolate_backward_grad(ctx, g_dr, g_df, g_da):
    # d_real = a*g, d_fake = (1-a)*g, d_alpha_j = sum_j (real - fake)*g: linear in g, so the
    # second order is a few elementwise products per group.
    grad, real, fake, alpha = ctx.saved_tensors
    pac = ctx.pac
    a = alpha.reshape(-1, 1)
    acc = a.dtype
    g = groups(grad, pac).to(acc)
    d_grad = torch.zeros_like(g)
    d_real = d_fake = d_alpha = None
    if g_dr is not None:
        d_grad = d_grad + a * groups(g_dr, pac).to(acc)
    if g_df is not None:
        d_grad = d_grad + (1 - a) * groups(g_df, pac).to(acc)
    if g_dr is not None or g_df is not None:
        zero = torch.zeros_like(g)
        diff = (groups(g_dr, pac).to(acc) if g_dr is not None else zero) - (
            groups(g_df, pac).to(acc) if g_df is not None else zero)
        d_alpha = (g * diff).sum(1).to(alpha.dtype)
    if g_da is not None:
        gda = g_da.reshape(-1, 1).to(acc)
        d_grad = d_grad + (groups(real, pac).to(acc) - groups(fake, pac).to(acc)) * gda
        d_real = (g * gda).to(real.dtype).reshape(real.shape)
        d_fake = (-d_real)
    need = ctx.needs_input_grad
    d_grad = d_grad.to(grad.dtype).reshape(grad.shape)
    return (d_grad if need[0] else None, d_real if need[1] else None,
            d_fake if need[2] else None, d_alpha if need[3] else None, None, None)


_interpolate_backward.register_autograd(_interpolate_backward_grad,
                                        setup_context=_interpolate_backward_setup)

# ---------------------------------------------------------------------------------------------
# The autograd.Function twins (see _dispatch) and the compiled kernel ops
# ---------------------------------------------------------------------------------------------

_InterpolateFn = _twin(
    "wgangp_fast_interpolate", "interpolate", 3,
    lambda real, fake, alpha, pac, backend: backends.get(backend).interpolate(real, fake, alpha,
                                                                              pac),
    _interpolate_setup, _interpolate_grad)
_InterpolateBackwardFn = _twin(
    "wgangp_fast_interpolate_backward", "interpolate_backward", 4,
    lambda grad, real, fake, alpha, pac, backend: tuple(
        backends.get(backend).interpolate_backward(grad, real, fake, alpha, pac)),
    _interpolate_backward_setup, _interpolate_backward_grad)


def _kernel_fake(real, fake, alpha, pac):
    return torch.empty_like(real, memory_format=torch.contiguous_format)


def _kernel_backward_fake(grad, real, fake, alpha, pac):
    like = torch.empty_like(real, memory_format=torch.contiguous_format)
    return like, torch.empty_like(like), alpha.new_empty((real.shape[0] // pac,))


_register_kernel_op("interpolate_kernel", _kernel_fake, _interpolate_setup, _interpolate_grad, 4)
_register_kernel_op("interpolate_backward_kernel", _kernel_backward_fake,
                    _interpolate_backward_setup, _interpolate_backward_grad, 5)

# ---------------------------------------------------------------------------------------------
# The public function
# ---------------------------------------------------------------------------------------------


def interpolate(real: Tensor, fake: Tensor, alpha: Optional[Tensor] = None, *, pac: int = 1,
                generator: Optional[torch.Generator] = None, backend: str = "auto") -> Tensor:
    """x_hat[i] = alpha[i // pac] * real[i] + (1 - alpha[i // pac]) * fake[i].

    alpha: M = N / pac values in any shape that flattens to M; None draws
    `torch.rand(M, device=real.device, generator=generator)`, the same values in the same order
    as hand-written penalty code draws them. Differentiable in real, fake and alpha (twice).
    """
    V.pair(real, fake)
    m = V.pac(pac, real.shape[0])
    pac = int(pac)
    if alpha is None:
        # the default dtype spelled out: inductor's lowering of a dtype-less torch.rand draws
        # float32 under a float64 default (cf. pytorch/pytorch#184405), which the kernels refuse
        alpha = torch.rand(m, device=real.device, generator=generator,
                           dtype=torch.get_default_dtype())
    else:
        alpha = V.group_vector("alpha", alpha, m, real)
    name = backends.resolve(backend, real.device)
    acc = acc_dtype(real.dtype)
    if alpha.dtype != acc:
        alpha = alpha.to(acc)
    return _run(_interpolate, _InterpolateFn, real, fake, alpha, pac, name)
