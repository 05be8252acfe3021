"""The losses of a WGAN-GP step and their backward passes:

    L_critic = E[D(fake)] - E[D(real)] + lambda * penalty     (every gp_every-th critic step)
    L_gen    = -E[D(G(z))]

The penalty of each method is the fused `wgangp_fast.gradient_penalty`, or `autograd_penalty`, the
same penalty in plain autograd over the op contract's eager formulas (wgangp_fast.testing), for
comparison. Lazy regularisation (StyleGAN2) computes the penalty on every k-th critic step only,
weighted by k. In fp16 the backward passes and optimiser steps go through a GradScaler, which the
fused penalty also receives: it differentiates S * mean(output) in float32 and folds N / S into
the norm's input scale.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Optional

import torch
from torch import Tensor, nn

from .. import testing
from ..penalty import gradient_penalty, kind_settings
from .config import PENALTY_KINDS, WGANGPConfig

__all__ = ["autograd_penalty", "critic_backward", "generator_backward", "penalty"]


def autocast(precision: str, device_type: str):
    """The precision context of the forward passes: torch.autocast for bf16 / fp16."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device_type, dtype=dtype)


def grad_scalers(precision: str, device_type: str):
    """(critic's, generator's) GradScaler for fp16, each backing off on its own overflows; (None,
    None) otherwise: bfloat16 has float32's exponent range and needs none."""
    if precision != "fp16":
        return None, None
    return torch.amp.GradScaler(device_type), torch.amp.GradScaler(device_type)


def backward(loss: Tensor, scaler, **kwargs) -> None:
    (scaler.scale(loss) if scaler is not None else loss).backward(**kwargs)


def optimizer_step(optimizer: torch.optim.Optimizer, scaler) -> bool:
    """optimizer.step(), through the GradScaler in fp16; True when the scaler skipped the step
    (inf/NaN gradients: the weights were not touched and the scale backed off)."""
    if scaler is None:
        optimizer.step()
        return False
    before = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    # update() lowers the scale exactly when this step found inf/NaN gradients; under DDP the
    # gradients were all-reduced first, so every rank skips together
    return scaler.get_scale() < before


def regularises(config: WGANGPConfig, critic_iters: int) -> bool:
    """Whether critic step number `critic_iters` computes the penalty (every gp_every-th)."""
    return config.method in PENALTY_KINDS and critic_iters % config.gp_every == 0


def lazy_adam_factor(config: WGANGPConfig) -> float:
    """StyleGAN2's lazy-regularisation correction c = k / (k + 1) of the critic's Adam (lr times
    c, betas to the power c); 1 without lazy_adam_correction or when k = 1."""
    if not config.lazy_adam_correction or config.gp_every == 1 or config.method == "clip":
        return 1.0
    return config.gp_every / (config.gp_every + 1)


def autograd_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, *,
                     kind: str = "wgan-gp", lambda_gp: float = 10.0, pac: int = 1,
                     alpha: Optional[Tensor] = None, dragan_c: float = 0.5) -> Tensor:
    """gradient_penalty(kind=...) in plain autograd: the points of `kind` and the norm penalty by
    the eager formulas of wgangp_fast.testing, differentiated by PyTorch. It draws its random
    numbers as the fused path does (dragan's perturbation, then one alpha per pac group), so
    both give the same values from the same RNG state."""
    target, one_sided, scale = kind_settings(kind, lambda_gp)
    real, fake = real.detach(), fake.detach()
    if kind in ("r1", "r2"):
        x = real if kind == "r1" else fake
    else:
        if kind == "dragan":
            noise = torch.rand(real.shape, device=real.device, dtype=real.dtype)
            real, fake = real + dragan_c * real.std() * noise, real
        if alpha is None:
            alpha = torch.rand(real.shape[0] // pac, device=real.device)
        x = testing.autograd_interpolate(real, fake, alpha, pac)
    x = x.detach().requires_grad_(True)
    out = critic(x)
    (grads,) = torch.autograd.grad(out, x, torch.ones_like(out), create_graph=True)
    return testing.autograd_gradient_norm_penalty(grads, pac, target=target,
                                                  one_sided=one_sided, scale=scale)


def penalty(config: WGANGPConfig, critic: nn.Module, real: Tensor, fake: Tensor, *,
            alpha: Optional[Tensor] = None, scaler=None) -> Optional[Tensor]:
    """The Lipschitz penalty of config.method (None for clip and sn), fused or in plain autograd
    by config.penalty_impl. `alpha` fixes the interpolation weights (one per pac group) instead
    of drawing them."""
    kind = PENALTY_KINDS.get(config.method)
    if kind is None:
        return None
    if config.penalty_impl == "fused":
        return gradient_penalty(critic, real, fake, lambda_gp=config.lambda_gp, pac=config.pac,
                                kind=kind, alpha=alpha, scaler=scaler, backend=config.backend)
    return autograd_penalty(critic, real, fake, kind=kind, lambda_gp=config.lambda_gp,
                            pac=config.pac, alpha=alpha)


def critic_backward(config: WGANGPConfig, critic: nn.Module, real: Tensor, fake: Tensor,
                    penalty_fn: Optional[Callable[[], Optional[Tensor]]], *, scaler=None,
                    precision_context=None) -> Dict[str, Any]:
    """The critic loss of one step and its backward (scaled in fp16); no optimiser step.
    `critic` is what the Wasserstein term goes through (the DDP wrapper, which arms the
    all-reduce); `penalty_fn` computes the penalty (through the inner critic, inside the same
    precision context), None on a step without it. One backward of the sum reaches every
    parameter, unless config.separate_backward asks for seed 000's two."""
    k = config.gp_every
    with precision_context if precision_context is not None else contextlib.nullcontext():
        # One critic pass over real and fake together: the critic has no batch coupling, and n
        # is a multiple of pac, so no pack mixes real and fake rows.
        scores = critic(torch.cat([real, fake])).float()
        m = scores.shape[0] // 2
        wasserstein = scores[:m].mean() - scores[m:].mean()
        loss = -wasserstein
        pen = penalty_fn() if penalty_fn is not None else None
    if pen is None:
        backward(loss, scaler)
        total = loss
    else:
        weighted = pen * k if k > 1 else pen
        if config.separate_backward:
            backward(weighted, scaler, retain_graph=True)
            backward(loss, scaler)
            total = loss + weighted
        else:
            total = loss + weighted
            backward(total, scaler)
    return {"loss_c": total.detach(), "wasserstein": wasserstein.detach(),
            "gp": None if pen is None else pen.detach()}


def generator_backward(generator: nn.Module, critic: nn.Module, noise: Tensor, *, scaler=None,
                       precision_context=None) -> Tensor:
    """-E[D(G(z))] and its backward (scaled in fp16); returns the detached loss. `critic` is the
    inner module: its gradients here are not used, so DDP need not reduce them."""
    with precision_context if precision_context is not None else contextlib.nullcontext():
        loss_g = -critic(generator(noise)).float().mean()
    backward(loss_g, scaler)
    return loss_g.detach()
