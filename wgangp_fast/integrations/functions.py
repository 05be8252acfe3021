"""Drop-ins with the signatures of two common hand-written penalty functions and a loss object,
on the fused ops.

- `compute_gradient_penalty(critic, real, fake, device)`: a per-sample penalty function with a
  device argument, the unscaled mean
  of (||grad|| - 1)^2 (the caller multiplies by gp_lambda).
- `gradient_penalty(D, real_data, fake_data, device, lambda_gp=10)`: the same, scaled by
  lambda_gp.
- `WassersteinGANLoss(lambda_gp=10)`: a loss object around it, `critic_loss(D, real_data,
  fake_data, device)` -> (loss, info dict) and `generator_loss(d_fake)`.

Each draws one alpha per sample as those functions do (`torch.rand(B, 1, 1, 1, device=device)`: the
same B values as `torch.rand(B, device=device)`, from the RNG of the `device` argument) and moves
it to the data, so for the same RNG state it returns the original's value up to float rounding.
The originals' alpha shape broadcasts per sample only for 4-D [B, C, H, W] batches, the case they
are written for; these drop-ins treat every rank per sample. Like the originals, they keep the
graph of real and fake (the caller detaches the generator's output, as their loops do).
"""

from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import Tensor

from .. import _validate as V
from ..penalty import gradient_penalty as _fused_penalty

__all__ = ["WassersteinGANLoss", "compute_gradient_penalty", "gradient_penalty"]


def _seed_penalty(critic, real: Tensor, fake: Tensor, device, lambda_gp) -> Tensor:
    V.pair(real, fake)
    if not isinstance(device, (str, int, torch.device)) or isinstance(device, bool):
        raise TypeError(
            f"device must be a device (a str or torch.device, where alpha is drawn), got "
            f"{type(device).__name__}: these drop-ins have the signatures of the functions they replace "
            f"(critic, real, fake, device). For another code's penalty function (a conditional "
            f"critic's labels, no device argument, a numpy alpha) call "
            f"wgangp_fast.drop_in_penalty(critic, real, fake, *inputs, lambda_gp=...) instead "
            f"(docs/porting.md)")
    alpha = torch.rand(real.shape[0], device=device)
    return _fused_penalty(critic, real, fake, lambda_gp=lambda_gp,
                          alpha=alpha.to(real.device), detach_inputs=False)


def compute_gradient_penalty(critic, real: Tensor, fake: Tensor, device) -> Tensor:
    """The penalty function of MLP training loops `(critic, real, fake, device)`: the mean over
    samples of (||d critic(x_hat) / d x_hat|| - 1)^2, not scaled (the caller multiplies)."""
    return _seed_penalty(critic, real, fake, device, 1.0)


def gradient_penalty(D, real_data: Tensor, fake_data: Tensor, device,
                     lambda_gp: float = 10) -> Tensor:
    """The penalty function `(D, real_data, fake_data, device, lambda_gp=10)`: lambda_gp times the
    mean over samples of (||d D(x_hat) / d x_hat|| - 1)^2."""
    return _seed_penalty(D, real_data, fake_data, device, lambda_gp)


class WassersteinGANLoss:
    """A WGAN-GP loss object (critic loss with the penalty, generator loss) with the fused
    penalty inside."""

    def __init__(self, lambda_gp: float = 10):
        V.finite("lambda_gp", lambda_gp)
        self.lambda_gp = lambda_gp

    def critic_loss(self, D, real_data: Tensor, fake_data: Tensor,
                    device) -> Tuple[Tensor, Dict[str, float]]:
        """-(E[D(real)] - E[D(fake)]) + GP, and a dict of the floats it logs (wasserstein, gp, d_real, d_fake)."""
        d_real = D(real_data)
        d_fake = D(fake_data)
        wasserstein_distance = d_real.mean() - d_fake.mean()
        gp = gradient_penalty(D, real_data, fake_data, device, self.lambda_gp)
        loss = -wasserstein_distance + gp
        return loss, {
            "wasserstein": wasserstein_distance.item(),
            "gp": gp.item(),
            "d_real": d_real.mean().item(),
            "d_fake": d_fake.mean().item(),
        }

    def generator_loss(self, d_fake: Tensor) -> Tensor:
        return -d_fake.mean()
