"""A penalty function to call where a training code calls its own: no device argument, the
critic's extra inputs positional or by keyword, lambda always stated.

    from wgangp_fast.integrations import drop_in_penalty
    gp = drop_in_penalty(netD, real.data, fake.data, lambda_gp=LAMBDA)          # was calc_gradient_penalty(netD, real.data, fake.data)
    gp = drop_in_penalty(D, real, fake, labels, lambda_gp=1.0)                # conditional critic D(x, labels), caller scales
    gp, norms = drop_in_penalty(D, real, fake, lambda_gp=10, return_norms=True)

lambda_gp has no default: codes use 10, 1 (the caller multiplies) or 0.1 (toy data), and a
forgotten lambda would silently scale the penalty by 100 in the last case.
"""

from __future__ import annotations

import warnings
from typing import Callable, Optional

import torch
from torch import Tensor

from ..penalty import NormDims, gradient_penalty

__all__ = ["drop_in_penalty", "warn_if_norm_axes_ambiguous"]

_REQUIRED = object()


def warn_if_norm_axes_ambiguous(real, norm_dims, norm_per, stacklevel: int) -> None:
    """A UserWarning for 3-D data with per-sample norms and no norm_dims: codes for [B, L, V]
    data differ on the axes.

    The TF original of WGAN-GP's language model takes the norm over both non-batch axes, while
    PyTorch ports that write `grads.norm(2, dim=1)` without flattening take it over axis 1 only.
    Images ([B, C, H, W]) are flattened by the codes in use, so only rank 3 is flagged.
    """
    if norm_dims is None and norm_per is None and isinstance(real, Tensor) and real.dim() == 3:
        warnings.warn(
            f"real has shape {list(real.shape)}: the penalty's norm runs over both non-batch "
            f"axes, as `grads.view(B, -1).norm(2, dim=1)` computes it. A code that writes "
            f"`grads.norm(2, dim=1)` on 3-D data takes it over axis 1 only: pass norm_dims=1 to "
            f"match that, or norm_dims=(1, 2) to keep both axes and silence this warning",
            UserWarning, stacklevel=stacklevel + 1)


def _no_device(where: str, value) -> TypeError:
    return TypeError(
        f"{where} is a device ({value!r}): drop_in_penalty takes no device argument, its "
        f"positional arguments after fake and its other keywords go to the critic. alpha is "
        f"drawn on real's device; pass alpha_fn to draw it elsewhere (e.g. on the CPU, then "
        f".to(device))")


def drop_in_penalty(critic, real, fake, *inputs, lambda_gp=_REQUIRED,
                    pac: int = 1, alpha_per=None, norm_per=None, alpha: Optional[Tensor] = None,
                    alpha_fn: Optional[Callable] = None, norm_dims: NormDims = None,
                    eps: float = 0.0, detach_inputs: bool = True, return_norms: bool = False,
                    generator: Optional[torch.Generator] = None, scaler=None,
                    backend: str = "auto", **critic_kwargs):
    """lambda_gp * mean((||d critic(x_hat, *inputs, **critic_kwargs) / d x_hat|| - 1)^2).

    x_hat interpolates real and fake with one alpha per group of `pac` samples, drawn as
    `torch.rand(N // pac)` on real's device (the values of `torch.rand(B, 1, 1, 1,
    device=real.device)`); `alpha_fn(m, like)` draws it another way (numpy, the CPU RNG then
    .to(device): see docs/porting.md), `alpha` passes it in any per-sample layout.

    - lambda_gp: required (1.0 for a function whose caller multiplies).
    - inputs / critic_kwargs: the critic's other arguments (labels of a conditional critic). A
      device among them (positional, or `device=`) is refused: this function has no device
      argument, and a critic would not expect one.
    - alpha_per / norm_per: samples per alpha and per norm, set apart ("sample", "batch" or a
      number; default pac): one alpha per sample and one norm over the batch is
      alpha_per="sample", norm_per="batch". real and fake may be lists or tuples of tensors for
      a critic of several inputs (see `wgangp_fast.gradient_penalty`).
    - norm_dims: the norm's axes where they are not every non-batch axis ("all": every axis,
      one norm over the whole batch); 3-D data with per-sample norms and no norm_dims warns,
      the codes differ there.
    - eps: inside the square root, for codes that write sqrt(sum(g^2) + 1e-12).
    - detach_inputs: real and fake are detached first (the originals pass `.data`); False keeps
      the graph to the generator.
    - return_norms: returns (penalty, norms), the norms one per group (per remaining position
      with norm_dims), differentiable.
    """
    if lambda_gp is _REQUIRED:
        raise TypeError(
            "drop_in_penalty needs lambda_gp: the factor the original multiplies its penalty by "
            "(LAMBDA, gp_weight, lambda_gp, ...), or 1.0 where the caller multiplies. It has no "
            "default because codes use 10, 1 and 0.1, and a wrong default would silently rescale "
            "the penalty")
    for i, extra in enumerate(inputs):
        if isinstance(extra, (str, torch.device)):
            raise _no_device(f"inputs[{i}]", extra)
    if isinstance(critic_kwargs.get("device"), (str, torch.device)):
        raise _no_device("device=", critic_kwargs["device"])
    warn_if_norm_axes_ambiguous(real, norm_dims, norm_per, stacklevel=2)
    return gradient_penalty(critic, real, fake, *inputs, lambda_gp=lambda_gp, pac=pac,
                            alpha_per=alpha_per, norm_per=norm_per,
                            alpha=alpha, alpha_fn=alpha_fn, norm_dims=norm_dims, eps=eps,
                            detach_inputs=detach_inputs, return_norms=return_norms,
                            generator=generator, scaler=scaler, backend=backend,
                            critic_kwargs=critic_kwargs or None)
