"""The drop-in: the whole gradient penalty of a critic in one call, and wrappers with the
signatures of the code it replaces (CTGAN's `calc_gradient_penalty`, seed 003's loss class)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import _validate as V
from .ops import gradient_norm_penalty, interpolate


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def input_gradients(critic, x: Tensor, *inputs, scaler=None):
    """(critic output, d critic / d x with create_graph=True, the factor that unscales it).

    With an enabled AMP GradScaler of scale S, the gradient is taken of S * mean(output) in float32
    and the returned factor is N / S, to be folded into the penalty's input_scale (PyTorch's AMP
    recipe for gradient penalties). The mean matters: the scaler tunes S for mean-reduced losses,
    and a per-sample gradient of S itself overflows float16 at the default S = 2^16.
    """
    if not torch.is_grad_enabled():
        raise RuntimeError(
            "the gradient penalty needs autograd (it differentiates the critic with respect to "
            "its input), but it was called with gradients disabled (inside torch.no_grad() or "
            "torch.inference_mode()): call it outside that block, or wrap the call in "
            "torch.enable_grad()")
    if not x.requires_grad:
        x.requires_grad_(True)
    out = _first(critic(x, *inputs))
    if not isinstance(out, Tensor):
        raise TypeError(f"critic must return a Tensor (or a tuple whose first element is one), "
                        f"got {type(out).__name__}")
    if not out.requires_grad:
        raise RuntimeError(_unconnected("its output does not require grad"))
    if scaler is not None and scaler.is_enabled():
        n = x.shape[0]
        (grads,) = torch.autograd.grad(outputs=scaler.scale(out.float().sum() / n), inputs=x,
                                       create_graph=True, retain_graph=True, allow_unused=True)
        factor = n / float(scaler.get_scale())
    else:
        (grads,) = torch.autograd.grad(outputs=out, inputs=x, grad_outputs=torch.ones_like(out),
                                       create_graph=True, retain_graph=True, allow_unused=True)
        factor = 1.0
    if grads is None:
        raise RuntimeError(_unconnected("its output does not depend on its input"))
    return out, grads, factor


def _unconnected(what: str) -> str:
    # autograd's own message here ("Set allow_unused=True") suggests a fix that would make the
    # penalty silently zero.
    return (f"critic is not differentiable with respect to its input x: {what}, so the gradient "
            f"penalty (a function of d critic(x) / dx) cannot be computed. Make the critic's "
            f"forward use x through differentiable torch ops: no x.detach(), x.data, "
            f"x.numpy() or torch.no_grad() on the path from x to the output")


KINDS = ("wgan-gp", "wgan-lp", "r1", "r2", "dragan")


def kind_settings(kind: str, lambda_gp: float, target: Optional[float] = None,
                  one_sided: Optional[bool] = None):
    """(target, one_sided, scale) of gradient_norm_penalty for a kind of penalty: zero-centred
    r1 / r2 have target 0 and scale lambda/2 (gamma/2 E||grad||^2), wgan-lp is one-sided, the
    others have target 1 and scale lambda. `target` and `one_sided` override the kind's."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}, got {kind!r}")
    zero_centred = kind in ("r1", "r2")
    if target is None:
        target = 0.0 if zero_centred else 1.0
    if one_sided is None:
        one_sided = kind == "wgan-lp"
    return target, one_sided, lambda_gp / 2 if zero_centred else lambda_gp


def penalty_points(kind: str, real: Optional[Tensor], fake: Optional[Tensor], *,
                   pac: int = 1, alpha: Optional[Tensor] = None,
                   generator: Optional[torch.Generator] = None, dragan_c: float = 0.5,
                   backend: str = "auto") -> Tensor:
    """Where each kind of penalty evaluates the critic's gradient.

    wgan-gp / wgan-lp: interpolates of real and fake (one alpha per group of `pac` samples);
    r1: the real samples; r2: the fake samples; dragan: interpolates between the real samples and a
    perturbation real + dragan_c * std(real) * U[0, 1) (Kodali et al.), drawn before alpha.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}, got {kind!r}")
    if kind in ("r1", "dragan") or kind.startswith("wgan"):
        V.tensor("real", real)
    if kind == "r2" or kind.startswith("wgan"):
        V.tensor("fake", fake)
    if kind == "r1":
        return real.detach().requires_grad_(True)
    if kind == "r2":
        return fake.detach().requires_grad_(True)
    if kind == "dragan":
        dragan_c = V.finite("dragan_c", dragan_c, minimum=0.0)
        noise = torch.rand(real.shape, device=real.device, dtype=real.dtype, generator=generator)
        perturbed = real + dragan_c * real.std() * noise
        return interpolate(perturbed, real, alpha, pac=pac, generator=generator, backend=backend)
    return interpolate(real, fake, alpha, pac=pac, generator=generator, backend=backend)


def gradient_penalty(critic, real: Optional[Tensor], fake: Optional[Tensor], *inputs,
                     lambda_gp: float = 10.0, pac: int = 1, kind: str = "wgan-gp",
                     alpha: Optional[Tensor] = None, generator: Optional[torch.Generator] = None,
                     target: Optional[float] = None, one_sided: Optional[bool] = None,
                     eps: float = 0.0, scaler=None, weight: Optional[Tensor] = None,
                     reduction: str = "mean", dragan_c: float = 0.5,
                     backend: str = "auto") -> Tensor:
    """lambda_gp * mean_j (||grad_x critic(x)[group j]|| - target)^2 at the points of `kind`.

    The drop-in for the seed codes' gradient_penalty (kind "wgan-gp", the default): draws one alpha
    per group of `pac` samples exactly as they do (same RNG use, same value), calls
    `critic(x_hat, *inputs)` (the first element if it returns a tuple), differentiates with
    create_graph=True and applies the fused penalty. Works with separate
    `pen.backward(retain_graph=True); loss.backward()` calls and with one backward of the sum.
    Pass the AMP `scaler` when training with a GradScaler.

    Other kinds: "wgan-lp" (one-sided, Petzka et al.), "r1" / "r2" (zero-centred on real / fake
    samples, Mescheder et al.: lambda_gp is gamma and the result is gamma/2 * E||grad||^2),
    "dragan" (perturbed real samples, target 1). `target` and `one_sided` default to the kind's.
    """
    if not callable(critic):
        raise TypeError(f"critic must be callable (an nn.Module), got {type(critic).__name__}")
    lambda_gp = V.finite("lambda_gp", lambda_gp)
    x = penalty_points(kind, real, fake, pac=pac, alpha=alpha, generator=generator,
                       dragan_c=dragan_c, backend=backend)
    target, one_sided, scale = kind_settings(kind, lambda_gp, target, one_sided)
    _, grads, inv_scale = input_gradients(critic, x, *inputs, scaler=scaler)
    return gradient_norm_penalty(grads, pac=pac, target=target, one_sided=one_sided, eps=eps,
                                 input_scale=inv_scale, weight=weight, reduction=reduction,
                                 scale=scale, backend=backend)


def calc_gradient_penalty(discriminator, real_data: Tensor, fake_data: Tensor, device="cpu",
                          pac: int = 10, lambda_: float = 10.0, *, backend: str = "auto") -> Tensor:
    """CTGAN's `Discriminator.calc_gradient_penalty(real_data, fake_data, device, pac, lambda_)`.

    `device` is accepted for signature compatibility; alpha is drawn where real_data lives, which is
    where CTGAN draws it in practice.
    """
    return gradient_penalty(discriminator, real_data, fake_data, lambda_gp=lambda_, pac=pac,
                            backend=backend)


class WassersteinGPLoss:
    """Seed-003-style loss object: `critic_loss(D, real, fake)` -> (loss, info dict)."""

    def __init__(self, lambda_gp: float = 10.0, *, pac: int = 1, backend: str = "auto"):
        self.lambda_gp = V.finite("lambda_gp", lambda_gp)
        self.pac = pac
        self.backend = backend

    def critic_loss(self, critic, real: Tensor, fake: Tensor, device=None, *inputs):
        """-(E[D(real)] - E[D(fake)]) + GP, and a dict of wasserstein, gp, d_real, d_fake floats."""
        d_real = _first(critic(real, *inputs)).mean()
        d_fake = _first(critic(fake, *inputs)).mean()
        wasserstein = d_real - d_fake
        gp = gradient_penalty(critic, real, fake, *inputs, lambda_gp=self.lambda_gp, pac=self.pac,
                              backend=self.backend)
        loss = -wasserstein + gp
        return loss, {"wasserstein": wasserstein.item(), "gp": gp.item(),
                      "d_real": d_real.item(), "d_fake": d_fake.item()}

    @staticmethod
    def generator_loss(d_fake: Tensor) -> Tensor:
        return -d_fake.mean()
