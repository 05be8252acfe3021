"""Plain-autograd references, in float64 where tests use them: what wgangp_fast is checked against,
by its own tests and by anyone who wants to check it on their data. Nothing here is fused; PyTorch
differentiates every function.

- `ctgan_gradient_penalty`: CTGAN's penalty with its `lambda_` factor
  (alpha per pac group, norm over `view(-1, pac * D)`).
- `per_sample_gradient_penalty`: the usual per-sample penalty, for inputs of any rank.
- `r1_penalty`, `lp_penalty`, `dragan_penalty`: the other penalty kinds the same way.
- `autograd_interpolate` and `autograd_gradient_norm_penalty`: the full contract of the ops
  `interpolate` and `gradient_norm_penalty` (README, "The ops") in eager ops, with autograd left to
  PyTorch (torch.linalg.vector_norm's zero-norm subgradient included).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def ctgan_gradient_penalty(critic, real: Tensor, fake: Tensor, device="cpu", pac: int = 10,
                           lambda_: float = 10.0) -> Tensor:
    """CTGAN's `calc_gradient_penalty` for [N, D] data, as CTGAN writes it, times lambda_."""
    batch = real.size(0) // pac
    alpha = torch.rand(batch, 1, device=device)
    alpha = alpha.expand(batch, real.size(1))
    if pac > 1:
        alpha = alpha.unsqueeze(1).expand(batch, pac, real.size(1))
        alpha = alpha.contiguous().view(-1, real.size(1))
    interpolates = alpha * real + (1 - alpha) * fake
    interpolates.requires_grad_(True)
    out = _first(critic(interpolates))
    gradients = torch.autograd.grad(outputs=out, inputs=interpolates,
                                    grad_outputs=torch.ones_like(out), create_graph=True,
                                    retain_graph=True)[0]
    norm = gradients.view(-1, pac * real.size(1)).norm(2, dim=1)
    return ((norm - 1) ** 2).mean() * lambda_


def per_sample_gradient_penalty(critic, real: Tensor, fake: Tensor, *inputs,
                                lambda_gp: float = 10.0) -> Tensor:
    """The usual per-sample penalty: one alpha per sample, for inputs of any rank."""
    batch = real.size(0)
    alpha = torch.rand(batch, *([1] * (real.dim() - 1)), device=real.device)
    interpolated = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    out = _first(critic(interpolated, *inputs))
    gradients = torch.autograd.grad(outputs=out, inputs=interpolated,
                                    grad_outputs=torch.ones_like(out), create_graph=True,
                                    retain_graph=True)[0]
    norm = gradients.view(batch, -1).norm(2, dim=1)
    return lambda_gp * ((norm - 1) ** 2).mean()


def autograd_interpolate(real: Tensor, fake: Tensor, alpha: Tensor, pac: int = 1) -> Tensor:
    """The interpolate contract in eager ops (alpha: M values; broadcast per group)."""
    m = real.shape[0] // pac
    a = alpha.reshape(m, *([1] * real.dim())).to(real.dtype)
    r = real.reshape(m, pac, *real.shape[1:])
    f = fake.reshape(m, pac, *real.shape[1:])
    return (a * r + (1 - a) * f).reshape(real.shape)


def autograd_gradient_norm_penalty(grads: Tensor, pac: int = 1, target: float = 1.0,
                                   one_sided: bool = False, eps: float = 0.0,
                                   input_scale: float = 1.0, weight: Optional[Tensor] = None,
                                   reduction: str = "mean", scale: float = 1.0) -> Tensor:
    """The gradient_norm_penalty contract in eager ops, differentiated by PyTorch's autograd."""
    m = grads.shape[0] // pac
    x = grads.reshape(m, -1) * input_scale
    if eps > 0:
        n = torch.sqrt(x.square().sum(1) + eps)
    else:
        n = torch.linalg.vector_norm(x, 2, dim=1)
    u = n - target
    if one_sided:
        u = torch.clamp(u, min=0)
    phi = u * u
    if weight is not None:
        phi = phi * weight.reshape(m)
    if reduction == "none":
        return scale * phi
    if reduction == "sum":
        return scale * phi.sum()
    return scale * phi.mean()


def _input_grad(critic, x, *inputs):
    out = _first(critic(x, *inputs))
    return torch.autograd.grad(outputs=out, inputs=x, grad_outputs=torch.ones_like(out),
                               create_graph=True, retain_graph=True)[0]


def r1_penalty(critic, x: Tensor, *inputs, gamma: float = 10.0) -> Tensor:
    """R1 (on real samples) or R2 (on fake samples): gamma/2 * E ||grad_x D(x)||^2."""
    x = x.detach().requires_grad_(True)
    g = _input_grad(critic, x, *inputs)
    return gamma / 2 * g.reshape(g.shape[0], -1).square().sum(1).mean()


def lp_penalty(critic, real: Tensor, fake: Tensor, *inputs, lambda_gp: float = 10.0) -> Tensor:
    """WGAN-LP: lambda * E max(0, ||grad|| - 1)^2 on per-sample interpolates."""
    alpha = torch.rand(real.size(0), *([1] * (real.dim() - 1)), device=real.device)
    x = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    g = _input_grad(critic, x, *inputs)
    return lambda_gp * (torch.clamp(g.reshape(g.shape[0], -1).norm(2, dim=1) - 1, min=0) ** 2).mean()


def dragan_penalty(critic, real: Tensor, *inputs, lambda_gp: float = 10.0, c: float = 0.5) -> Tensor:
    """DRAGAN: x_p = x + c * std(x) * U[0,1); x_hat = x + alpha (x_p - x); lambda E(||grad|| - 1)^2."""
    x_p = real + c * real.std() * torch.rand(real.shape, device=real.device, dtype=real.dtype)
    alpha = torch.rand(real.size(0), *([1] * (real.dim() - 1)), device=real.device)
    x = (real + alpha * (x_p - real)).requires_grad_(True)
    g = _input_grad(critic, x, *inputs)
    return lambda_gp * ((g.reshape(g.shape[0], -1).norm(2, dim=1) - 1) ** 2).mean()
