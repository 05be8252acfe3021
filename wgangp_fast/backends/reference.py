"""The `reference` backend: the four kernel functions written with plain PyTorch ops.

It runs on any device and is the fallback where no compiled or Triton kernel can serve. Its
per-group formulas (`penalty_coef`) also build the second-order autograd of the fused ops, which
is why they are written with differentiable ops only.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

NONE, MEAN, SUM = 0, 1, 2


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The accumulation dtype of every backend: float64 for float64, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def groups(t: Tensor, pac: int) -> Tensor:
    """t as [M, pac * D] (a view where possible)."""
    return t.reshape(t.shape[0] // pac, -1)


def interpolate(real: Tensor, fake: Tensor, alpha: Tensor, pac: int) -> Tensor:
    a = alpha.reshape(-1, 1)
    # The eager code's operation order, so float32 results are bitwise those of that code.
    x = a * groups(real, pac).to(a.dtype) + (1 - a) * groups(fake, pac).to(a.dtype)
    return x.to(real.dtype).reshape(real.shape).contiguous()


def interpolate_backward(grad: Tensor, real: Tensor, fake: Tensor, alpha: Tensor, pac: int):
    a = alpha.reshape(-1, 1)
    g = groups(grad, pac).to(a.dtype)
    d_real = (a * g).to(real.dtype).reshape(real.shape).contiguous()
    d_fake = ((1 - a) * g).to(real.dtype).reshape(real.shape).contiguous()
    diff = groups(real, pac).to(a.dtype) - groups(fake, pac).to(a.dtype)
    d_alpha = (diff * g).sum(1).to(alpha.dtype)
    return d_real, d_fake, d_alpha


def excess(norms: Tensor, target: float, one_sided: bool) -> Tensor:
    u = norms - target
    return u.clamp_min(0) if one_sided else u


def reduction_factor(reduction: int, m: int) -> float:
    return 1.0 / m if reduction == MEAN else 1.0


def phi_grad(grad_out: Tensor, reduction: int, m: int, scale: float, dtype) -> Tensor:
    """Upstream gradient of each phi_j: scale, the reduction factor and grad_out, as [M] or 0-d."""
    return grad_out.to(dtype) * (scale * reduction_factor(reduction, m))


def penalty_coef(grad_out: Tensor, grad_norms: Optional[Tensor], norms: Tensor,
                 weight: Optional[Tensor], target: float, one_sided: bool, input_scale: float,
                 reduction: int, scale: float) -> Tensor:
    """c_j with d grads = c_j * grads over group j; 0 where n_j == 0 (not 0/0). A NaN norm gives
    a NaN c_j, so a NaN in a group's gradients shows in all of its derivatives, as in eager
    autograd (a `n > 0` mask would turn it into 0)."""
    m = norms.shape[0]
    n = norms
    g_phi = phi_grad(grad_out, reduction, m, scale, n.dtype)
    a = g_phi * 2 * excess(n, target, one_sided)
    if weight is not None:
        a = a * weight.to(n.dtype)
    if grad_norms is not None:
        a = a + grad_norms.to(n.dtype)
    nonzero = n != 0
    safe_n = torch.where(nonzero, n, torch.ones_like(n))
    return torch.where(nonzero, a * (input_scale * input_scale) / safe_n, torch.zeros_like(n))


def penalty_forward(grads: Tensor, weight: Optional[Tensor], pac: int, target: float,
                    one_sided: bool, eps: float, input_scale: float, reduction: int,
                    scale: float):
    acc = acc_dtype(grads.dtype)
    x = groups(grads, pac).to(acc) * input_scale
    norms = torch.sqrt(x.square().sum(1) + eps)
    u = excess(norms, target, one_sided)
    phi = u * u
    if weight is not None:
        phi = phi * weight.reshape(-1).to(acc)
    if reduction == NONE:
        out = phi * scale
    else:
        out = phi.sum() * (scale * reduction_factor(reduction, phi.shape[0]))
    return out.to(grads.dtype).contiguous(), norms.contiguous()


def penalty_backward(grad_out: Tensor, grad_norms: Optional[Tensor], grads: Tensor, norms: Tensor,
                     weight: Optional[Tensor], pac: int, target: float, one_sided: bool,
                     input_scale: float, reduction: int, scale: float) -> Tensor:
    c = penalty_coef(grad_out, grad_norms, norms, weight, target, one_sided, input_scale,
                     reduction, scale)
    v = groups(grads, pac).to(c.dtype)
    return (v * c.reshape(-1, 1)).to(grads.dtype).reshape(grads.shape).contiguous()
