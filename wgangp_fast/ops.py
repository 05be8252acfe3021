"""The fused ops as torch.library custom ops, with fake implementations and autograd.

Layering: kernels (csrc/, triton_kernels.py, backends/eager.py) -> the backend table
(backends/__init__.py) -> this file (torch.library ops, autograd, argument checks) -> the drop-in
API (penalty.py).

Each op takes the name of an already-resolved backend as its last argument, so one registered op
serves every backend and `torch.library.opcheck` can test each. The first-order backward of both
ops is a fused kernel too (it is on the training hot path: `loss.backward()` through the penalty).
Their own backwards (second order, needed only by gradgradcheck or higher-order uses) are written
with differentiable PyTorch ops on top of the same kernels.
"""

from __future__ import annotations

import functools
import os
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import _validate as V
from . import backends
from .backends import reference as eager

# Eager calls skip the registered ops' Python round trips through the dispatcher (several tens of
# microseconds per op, which is most of the cost at small sizes): on the compiled backends (cpu,
# cuda) they call the kernel ops, whose autograd is in C++ (csrc/autograd.cpp); on triton and
# reference, a torch.autograd.Function that shares the registered op's kernels and autograd
# formulas. With WGANGP_FAST_DISPATCHER=1 (or this flag set), eager calls go through the
# registered torch.library ops. Under torch.compile and torch.func transforms calls take the
# twins, whose forward under torch.compile is the registered op (see _run).
FORCE_DISPATCHER = os.environ.get("WGANGP_FAST_DISPATCHER", "0") == "1"
# With WGANGP_FAST_CPP_AUTOGRAD=0 (or this flag False), eager calls on cpu and cuda take the
# autograd.Function twins too: the path before the C++ autograd, kept to measure against
# (benchmarks/host_overhead.py shows both) and as a fallback.
CPP_AUTOGRAD = os.environ.get("WGANGP_FAST_CPP_AUTOGRAD", "1") != "0"


def _use_dispatcher() -> bool:
    return FORCE_DISPATCHER and not torch.compiler.is_compiling()


def _use_cpp_autograd(backend: str) -> bool:
    return CPP_AUTOGRAD and backend in backends.COMPILED and not FORCE_DISPATCHER


def _functorch_wrapped(args) -> bool:
    """True inside a torch.func transform (grad, vjp, ...): its tensors are functorch wrappers."""
    wrapped = torch._C._functorch.is_functorch_wrapped_tensor
    return any(isinstance(a, Tensor) and wrapped(a) for a in args)


def _run(op, function, *args, ctx=None):
    """Call the registered op, its autograd.Function twin, or on the compiled backends the
    kernel op with its C++ autograd, with the same arguments (the backend name last).

    - torch.compile and torch.func transforms take the twin (a functorch-compatible
      autograd.Function, setup_context style): the registered op's generated autograd and the
      C++ nodes do not compose with torch.func, and compiling torch.func.grad_and_value over
      them fails. Under torch.compile the twin's forward calls the registered op, so the graph
      holds the op and not the backend's Python launcher.
    - A backward (given its ctx) stays on the path its forward took.
    - Where autograd would record nothing (grad mode off, as in a first-order backward, or no
      input requiring grad, as for interpolate on data), the kernel runs without the
      autograd.Function around it: about 10 us less per call.
    """
    if torch.compiler.is_compiling():
        if torch.is_grad_enabled():
            return function.apply(*args)
        return op(*args)
    if _use_dispatcher() or (ctx is not None and not getattr(ctx, "twin", False)):
        return op(*args)
    if _functorch_wrapped(args):
        return function.apply(*args)
    if ctx is None and _use_cpp_autograd(args[-1]):
        return function.kernel(*args)  # the kernel op, which carries its autograd (C++)
    if torch.is_grad_enabled():
        for i in function.tensor_args:
            if args[i] is not None and args[i].requires_grad:
                return function.apply(*args)
    return function.kernel(*args)

# ---------------------------------------------------------------------------------------------
# interpolate
# ---------------------------------------------------------------------------------------------


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
    g = eager.groups(grad, pac).to(acc)
    d_grad = torch.zeros_like(g)
    d_real = d_fake = d_alpha = None
    if g_dr is not None:
        d_grad = d_grad + a * eager.groups(g_dr, pac).to(acc)
    if g_df is not None:
        d_grad = d_grad + (1 - a) * eager.groups(g_df, pac).to(acc)
    if g_dr is not None or g_df is not None:
        zero = torch.zeros_like(g)
        diff = (eager.groups(g_dr, pac).to(acc) if g_dr is not None else zero) - (
            eager.groups(g_df, pac).to(acc) if g_df is not None else zero)
        d_alpha = (g * diff).sum(1).to(alpha.dtype)
    if g_da is not None:
        gda = g_da.reshape(-1, 1).to(acc)
        d_grad = d_grad + (eager.groups(real, pac).to(acc) - eager.groups(fake, pac).to(acc)) * gda
        d_real = (g * gda).to(real.dtype).reshape(real.shape)
        d_fake = (-d_real)
    need = ctx.needs_input_grad
    d_grad = d_grad.to(grad.dtype).reshape(grad.shape)
    return (d_grad if need[0] else None, d_real if need[1] else None,
            d_fake if need[2] else None, d_alpha if need[3] else None, None, None)


_interpolate_backward.register_autograd(_interpolate_backward_grad,
                                        setup_context=_interpolate_backward_setup)

# ---------------------------------------------------------------------------------------------
# gradient_norm_penalty
# ---------------------------------------------------------------------------------------------


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
    out = grads.new_empty((m,) if reduction == eager.NONE else ())
    return out, grads.new_empty((m,), dtype=eager.acc_dtype(grads.dtype))


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
        g_out = grads.new_zeros((m,) if reduction == eager.NONE else ())
    d_grads = d_weight = None
    need = ctx.needs_input_grad
    if need[0]:
        d_grads = _run(_penalty_backward, _PenaltyBackwardFn, g_out, g_norms, grads, norms, weight,
                       pac, target, one_sided, input_scale, reduction, scale, backend, ctx=ctx)
    if weight is not None and need[1]:
        u = eager.excess(norms, target, one_sided)
        g_phi = eager.phi_grad(g_out, reduction, norms.shape[0], scale, norms.dtype)
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
    v = eager.groups(grads, pac).to(acc)
    g = eager.groups(gy, pac).to(acc)
    c = eager.penalty_coef(grad_out, grad_norms, n, weight, target, one_sided, input_scale,
                           reduction, scale)
    need = ctx.needs_input_grad
    d_grads = (g * c.reshape(-1, 1)).to(grads.dtype).reshape(grads.shape) if need[2] else None
    dc = (v * g).sum(1)
    # n != 0 rather than n > 0: a NaN norm must give NaN here too (see penalty_coef).
    nonzero = n != 0
    safe_n = torch.where(nonzero, n, torch.ones_like(n))
    k = torch.where(nonzero, s2 / safe_n, torch.zeros_like(n))
    dk = torch.where(nonzero, -s2 / (safe_n * safe_n), torch.zeros_like(n))
    u = eager.excess(n, target, one_sided)
    du = (n - target > 0).to(acc) if one_sided else torch.ones_like(n)
    w = weight.reshape(-1).to(acc) if weight is not None else torch.ones_like(n)
    g_phi = eager.phi_grad(grad_out, reduction, m, scale, acc)
    a = g_phi * w * 2 * u + (grad_norms.to(acc) if grad_norms is not None else 0)
    d_grad_out = d_grad_norms = d_norms = d_weight = None
    if need[0]:
        d_gphi = dc * k * w * 2 * u * (scale * eager.reduction_factor(reduction, m))
        d_grad_out = d_gphi if reduction == eager.NONE else d_gphi.sum()
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
# autograd.Function twins of the registered ops (the eager fast path; see _use_dispatcher)
# ---------------------------------------------------------------------------------------------


def _twin(name, op_name, tensor_args, forward, setup, backward):
    """An autograd.Function whose forward is `forward` (the registered op `op_name` under
    torch.compile) and whose ctx handling and backward are exactly those registered for the
    torch.library op. It uses the separate setup_context form, which torch.func transforms
    require. It carries the op's name, so a graph's grad_fn reads the same on both paths (e.g.
    wgangp_fast_gradient_norm_penaltyBackward). `tensor_args`: the positions of the (optional)
    tensor arguments, for _run's requires_grad check."""

    # the OpOverload (torch.ops.wgangp_fast.<op>.default), which dynamo traces under torch.func
    # transforms too (the CustomOpDef object it cannot wrap there)
    registered = getattr(torch.ops.wgangp_fast, op_name).default

    @functools.wraps(forward)  # torch.compile binds the arguments by the forward's signature
    def fwd(*args):
        return (registered if torch.compiler.is_compiling() else forward)(*args)

    def setup_context(ctx, inputs, output):
        setup(ctx, inputs, output)
        ctx.twin = True

    return type(name, (torch.autograd.Function,),
                {"forward": staticmethod(fwd), "setup_context": staticmethod(setup_context),
                 "backward": staticmethod(backward), "kernel": staticmethod(forward),
                 "tensor_args": tensor_args})


_InterpolateFn = _twin(
    "wgangp_fast_interpolate", "interpolate", (0, 1, 2),
    lambda real, fake, alpha, pac, backend: backends.get(backend).interpolate(real, fake, alpha,
                                                                              pac),
    _interpolate_setup, _interpolate_grad)
_InterpolateBackwardFn = _twin(
    "wgangp_fast_interpolate_backward", "interpolate_backward", (0, 1, 2, 3),
    lambda grad, real, fake, alpha, pac, backend: tuple(
        backends.get(backend).interpolate_backward(grad, real, fake, alpha, pac)),
    _interpolate_backward_setup, _interpolate_backward_grad)
_PenaltyFn = _twin(
    "wgangp_fast_gradient_norm_penalty", "gradient_norm_penalty", (0, 1),
    lambda grads, weight, pac, target, one_sided, eps, input_scale, reduction, scale, backend:
    tuple(backends.get(backend).penalty_forward(grads, weight, pac, target, one_sided, eps,
                                                input_scale, reduction, scale)),
    _penalty_setup, _penalty_grad)
_PenaltyBackwardFn = _twin(
    "wgangp_fast_gradient_norm_penalty_backward", "gradient_norm_penalty_backward", (0, 1, 2, 3, 4),
    lambda grad_out, grad_norms, grads, norms, weight, pac, target, one_sided, input_scale,
    reduction, scale, backend: backends.get(backend).penalty_backward(
        grad_out, grad_norms, grads, norms, weight, pac, target, one_sided, input_scale, reduction,
        scale),
    _penalty_backward_setup, _penalty_backward_grad)

# ---------------------------------------------------------------------------------------------
# The compiled kernel ops: fake implementations and second-order autograd
# ---------------------------------------------------------------------------------------------


def _register_kernel_ops():
    """Fake implementations of the compiled kernel ops (for torch.compile and opcheck), and the
    second-order autograd of their backward ops: the first-order autograd is C++
    (csrc/autograd.cpp), whose backward calls these ops through the dispatcher when it builds a
    graph (create_graph=True). The formulas are the registered ops' own."""
    if backends._cpu_extension()[0] is None:
        return

    def kernel_autograd(name, setup, backward, num_inputs):
        # The registered op's backward also returns a None for its backend argument.
        torch.library.register_autograd(
            f"wgangp_fast::{name}", lambda ctx, *grads: backward(ctx, *grads)[:num_inputs],
            setup_context=setup)

    kernel_autograd("interpolate_backward_kernel", _interpolate_backward_setup,
                    _interpolate_backward_grad, 5)
    kernel_autograd("penalty_backward_kernel", _penalty_backward_setup, _penalty_backward_grad,
                    11)

    @torch.library.register_fake("wgangp_fast::interpolate_kernel")
    def _(real, fake, alpha, pac):
        return torch.empty_like(real, memory_format=torch.contiguous_format)

    @torch.library.register_fake("wgangp_fast::interpolate_backward_kernel")
    def _(grad, real, fake, alpha, pac):
        like = torch.empty_like(real, memory_format=torch.contiguous_format)
        return like, torch.empty_like(like), alpha.new_empty((real.shape[0] // pac,))

    @torch.library.register_fake("wgangp_fast::penalty_forward_kernel")
    def _(grads, weight, pac, target, one_sided, eps, input_scale, reduction, scale):
        m = grads.shape[0] // pac
        out = grads.new_empty((m,) if reduction == eager.NONE else ())
        return out, grads.new_empty((m,), dtype=eager.acc_dtype(grads.dtype))

    @torch.library.register_fake("wgangp_fast::penalty_backward_kernel")
    def _(grad_out, grad_norms, grads, norms, weight, pac, target, one_sided, input_scale,
          reduction, scale):
        return torch.empty_like(grads, memory_format=torch.contiguous_format)


_register_kernel_ops()

# ---------------------------------------------------------------------------------------------
# Public op functions
# ---------------------------------------------------------------------------------------------


def interpolate(real: Tensor, fake: Tensor, alpha: Optional[Tensor] = None, *, pac: int = 1,
                generator: Optional[torch.Generator] = None, backend: str = "auto") -> Tensor:
    """x_hat[i] = alpha[i // pac] * real[i] + (1 - alpha[i // pac]) * fake[i].

    alpha: M = N / pac values in any shape that flattens to M; None draws
    `torch.rand(M, device=real.device, generator=generator)`, the same values in the same order
    as the seed codes draw them. Differentiable in real, fake and alpha (twice).
    """
    V.pair(real, fake)
    m = V.pac(pac, real.shape[0])
    pac = int(pac)
    if alpha is None:
        alpha = torch.rand(m, device=real.device, generator=generator)
    else:
        alpha = V.group_vector("alpha", alpha, m, real)
    name = backends.resolve(backend, real.device)
    acc = eager.acc_dtype(real.dtype)
    if alpha.dtype != acc:
        alpha = alpha.to(acc)
    return _run(_interpolate, _InterpolateFn, real, fake, alpha, pac, name)


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
