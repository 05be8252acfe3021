"""The drop-in: the whole gradient penalty of a critic in one call, and wrappers with the
signatures of the code it replaces (CTGAN's `calc_gradient_penalty`, seed 003's loss class)."""

from __future__ import annotations

import functools
import math
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from . import _validate as V
from . import testing
from .ops import gradient_norm_penalty, interpolate

# How the penalty's two ops are computed: "fused" (wgangp_fast's ops) or "autograd" (the same
# formulas in plain PyTorch ops, differentiated by autograd: the comparison path, from
# wgangp_fast.testing).
PENALTY_IMPLS = ("fused", "autograd")


def critic_scores(out, name: str = "critic") -> Tensor:
    """The scores in what a critic returned: the output itself, or the first element of a tuple
    or list. Anything else is refused by name: a score must be a floating-point tensor, which the
    loss averages and the penalty differentiates."""
    scores = out[0] if isinstance(out, (tuple, list)) and len(out) > 0 else out
    if not isinstance(scores, Tensor):
        got = type(scores).__name__ if scores is out else \
            f"a {type(out).__name__} whose first element is a {type(scores).__name__}"
        raise TypeError(f"{name} must return a Tensor of scores (or a tuple or list whose first "
                        f"element is one), got {got}")
    if not scores.is_floating_point():
        raise TypeError(f"{name} must return floating-point scores, got a {scores.dtype} tensor "
                        f"(the loss averages the scores and the penalty differentiates them)")
    return scores


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
    out = critic_scores(critic(x, *inputs))
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


def _autograd_interpolate(real, fake, alpha, *, pac, generator, backend):
    """interpolate's contract in plain PyTorch ops, drawing alpha as interpolate does."""
    if alpha is None:
        alpha = torch.rand(real.shape[0] // pac, device=real.device, generator=generator,
                           dtype=torch.get_default_dtype())
    return testing.autograd_interpolate(real, fake, alpha, pac)


def penalty_points(kind: str, real: Optional[Tensor], fake: Optional[Tensor], *,
                   pac: int = 1, alpha: Optional[Tensor] = None,
                   generator: Optional[torch.Generator] = None, dragan_c: float = 0.5,
                   backend: str = "auto", impl: str = "fused") -> Tensor:
    """Where each kind of penalty evaluates the critic's gradient.

    wgan-gp / wgan-lp: interpolates of real and fake (one alpha per group of `pac` samples);
    r1: the real samples; r2: the fake samples; dragan: interpolates between the real samples and a
    perturbation real + dragan_c * std(real) * U[0, 1) (Kodali et al.), drawn before alpha.
    `impl` "autograd" interpolates in plain PyTorch ops (the same draws, the same values).
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
        real, fake = real + dragan_c * real.std() * noise, real
    mix = interpolate if impl == "fused" else _autograd_interpolate
    return mix(real, fake, alpha, pac=pac, generator=generator, backend=backend)


def norm_penalty(grads: Tensor, *, pac: int = 1, target: float = 1.0, one_sided: bool = False,
                 input_scale: float = 1.0, scale: float = 1.0, backend: str = "auto",
                 impl: str = "fused") -> Tuple[Tensor, Tensor]:
    """(gradient_norm_penalty of grads, the per-group norms), by the fused op or, with impl
    "autograd", by the op contract's plain-PyTorch formulas (the norms then detached)."""
    if impl == "fused":
        return gradient_norm_penalty(grads, pac=pac, target=target, one_sided=one_sided,
                                     input_scale=input_scale, scale=scale, backend=backend,
                                     return_norms=True)
    pen = testing.autograd_gradient_norm_penalty(grads, pac, target=target, one_sided=one_sided,
                                                 input_scale=input_scale, scale=scale)
    with torch.no_grad():
        norms = torch.linalg.vector_norm(grads.reshape(grads.shape[0] // pac, -1) * input_scale,
                                         dim=1)
    return pen, norms


def gradient_penalty(critic, real: Optional[Tensor], fake: Optional[Tensor], *inputs,
                     lambda_gp: float = 10.0, pac: int = 1, kind: str = "wgan-gp",
                     alpha: Optional[Tensor] = None, generator: Optional[torch.Generator] = None,
                     target: Optional[float] = None, one_sided: Optional[bool] = None,
                     eps: float = 0.0, scaler=None, weight: Optional[Tensor] = None,
                     reduction: str = "mean", dragan_c: float = 0.5,
                     backend: str = "auto", alpha_fn: Optional[Callable] = None,
                     norm_dims: NormDims = None, detach_inputs: bool = True,
                     critic_kwargs: Optional[dict] = None, return_norms: bool = False):
    """lambda_gp * mean_j (||grad_x critic(x)[group j]|| - target)^2 at the points of `kind`.

    The drop-in for the seed codes' gradient_penalty (kind "wgan-gp", the default): draws one alpha
    per group of `pac` samples exactly as they do (same RNG use, same value), calls
    `critic(x_hat, *inputs, **critic_kwargs)` (the first element if it returns a tuple),
    differentiates with create_graph=True and applies the fused penalty. Works with separate
    `pen.backward(retain_graph=True); loss.backward()` calls and with one backward of the sum.
    Pass the AMP `scaler` when training with a GradScaler.

    Other kinds: "wgan-lp" (one-sided, Petzka et al.), "r1" / "r2" (zero-centred on real / fake
    samples, Mescheder et al.: lambda_gp is gamma and the result is gamma/2 * E||grad||^2),
    "dragan" (perturbed real samples, target 1). `target` and `one_sided` default to the kind's.

    Matching the code it replaces:
    - alpha: M = N / pac values in any shape that flattens to M, or any per-sample layout of the
      batch ([N], [N, 1], [N, 1, 1, 1], expanded to real's full shape, ...) holding one value per
      group (checked). alpha_fn(m, like) -> such a tensor draws it instead, for draws other than
      `torch.rand(M)` on real's device (numpy, the CPU RNG then .to(device)); `like` is real.
    - norm_dims: the axes the norm runs over when it is not every non-batch axis (a code that
      writes `grads.norm(2, dim=1)` on [B, L, V] data: norm_dims=1); the penalty is then per
      (sample, remaining axes) element, averaged. None or "all": every non-batch axis.
    - detach_inputs (default True): real and fake are detached before interpolation, as codes
      that pass `.data` or `.detach()` have it; False keeps their graph (the penalty then reaches
      the generator too, as CTGAN's own method does).
    - return_norms: also return the gradient norms (one per group, or the shape of real without
      norm_dims), differentiable like the penalty.
    """
    if not callable(critic):
        raise TypeError(f"critic must be callable (an nn.Module), got {type(critic).__name__}")
    lambda_gp = V.finite("lambda_gp", lambda_gp)
    if not isinstance(detach_inputs, bool):
        raise TypeError(f"detach_inputs must be a bool, got {detach_inputs!r}")
    if detach_inputs:
        real = real.detach() if isinstance(real, Tensor) else real
        fake = fake.detach() if isinstance(fake, Tensor) else fake
    if critic_kwargs:
        if not isinstance(critic_kwargs, dict):
            raise TypeError(f"critic_kwargs must be a dict of keyword arguments for the critic, "
                            f"got {type(critic_kwargs).__name__}")
        critic = functools.partial(critic, **critic_kwargs)
    points_of = fake if kind == "r2" else real
    if (alpha is not None or alpha_fn is not None) and points_of is not None:
        V.tensor("fake" if kind == "r2" else "real", points_of)
        alpha = per_group_alpha(alpha, points_of, pac, alpha_fn=alpha_fn)
    layout = None
    if norm_dims is not None and points_of is not None:
        V.tensor("fake" if kind == "r2" else "real", points_of)
        layout = norm_layout(norm_dims, points_of.shape, pac)
    x = penalty_points(kind, real, fake, pac=pac, alpha=alpha, generator=generator,
                       dragan_c=dragan_c, backend=backend)
    target, one_sided, scale = kind_settings(kind, lambda_gp, target, one_sided)
    _, grads, inv_scale = input_gradients(critic, x, *inputs, scaler=scaler)
    group_pac = pac
    if layout is not None:
        grads = grads.permute(layout[0]).reshape(-1, layout[2])
        group_pac = 1
    out = gradient_norm_penalty(grads, pac=group_pac, target=target, one_sided=one_sided,
                                eps=eps, input_scale=inv_scale, weight=weight,
                                reduction=reduction,
                                scale=scale,
                                backend=backend, return_norms=return_norms)
    if layout is None:
        return out
    penalty, norms = out if return_norms else (out, None)
    if reduction == "none":
        penalty = penalty.reshape(layout[1])
    return (penalty, norms.reshape(layout[1])) if return_norms else penalty


def calc_gradient_penalty(discriminator, real_data: Tensor, fake_data: Tensor, device="cpu",
                          pac: int = 10, lambda_: float = 10.0, *, backend: str = "auto") -> Tensor:
    """CTGAN's `Discriminator.calc_gradient_penalty(real_data, fake_data, device, pac, lambda_)`.

    Like CTGAN's method it draws alpha on `device`, so `device` must be where real_data lives
    (CTGAN's own code fails on the mismatch; this says so instead of running elsewhere), and it
    keeps the graph of real_data and fake_data, as CTGAN does.
    """
    V.tensor("real_data", real_data)
    check_device("device", device, real_data, "real_data")
    return gradient_penalty(discriminator, real_data, fake_data, lambda_gp=lambda_, pac=pac,
                            backend=backend, detach_inputs=False)


class WassersteinGPLoss:
    """Seed-003-style loss object: `critic_loss(D, real, fake)` -> (loss, info dict)."""

    def __init__(self, lambda_gp: float = 10.0, *, pac: int = 1, backend: str = "auto"):
        self.lambda_gp = V.finite("lambda_gp", lambda_gp)
        self.pac = pac
        self.backend = backend

    def critic_loss(self, critic, real: Tensor, fake: Tensor, device=None, *inputs):
        """-(E[D(real)] - E[D(fake)]) + GP, and a dict of wasserstein, gp, d_real, d_fake floats."""
        d_real = critic_scores(critic(real, *inputs)).mean()
        d_fake = critic_scores(critic(fake, *inputs)).mean()
        wasserstein = d_real - d_fake
        gp = gradient_penalty(critic, real, fake, *inputs, lambda_gp=self.lambda_gp, pac=self.pac,
                              backend=self.backend, detach_inputs=False)
        loss = -wasserstein + gp
        return loss, {"wasserstein": wasserstein.item(), "gp": gp.item(),
                      "d_real": d_real.item(), "d_fake": d_fake.item()}

    @staticmethod
    def generator_loss(d_fake: Tensor) -> Tensor:
        return -d_fake.mean()


# ---------------------------------------------------------------------------------------------
# The layouts of the code being replaced: its alpha, its norm axes, its device argument
# ---------------------------------------------------------------------------------------------

NormDims = Union[None, str, int, Sequence[int]]


def per_group_alpha(alpha: Optional[Tensor], real: Tensor, pac: int = 1, *,
                    alpha_fn: Optional[Callable] = None) -> Tensor:
    """The M = N / pac per-group values of alpha as the fused interpolate takes them.

    alpha may already hold M values (any shape that flattens to M), or lay them out over the
    batch as the replaced code broadcasts it: leading axis N, every other axis 1 or real's size
    there ([N], [N, 1], [N, 1, 1, 1], [N, 1, H, W], real's full shape, expanded or materialised).
    Then every value of a group (its pac samples, all their positions) must be equal; the check
    reads only the axes that are not expanded views, and costs one host synchronisation on a GPU
    (M values skip it). alpha_fn(m, like=real) draws alpha instead; its result is read the same
    way.
    """
    m = V.pac(pac, real.shape[0])
    if alpha_fn is not None:
        if alpha is not None:
            raise ValueError("pass alpha or alpha_fn, not both")
        if not callable(alpha_fn):
            raise TypeError(f"alpha_fn must be callable as alpha_fn(m, like), got "
                            f"{type(alpha_fn).__name__}")
        alpha = alpha_fn(m, real)
        where = "the tensor alpha_fn returned"
    else:
        where = "alpha"
    if not isinstance(alpha, Tensor):
        raise TypeError(f"{where} must be a torch.Tensor of {m} values (one per group of "
                        f"pac={pac} samples), got {type(alpha).__name__}")
    if alpha.numel() == m:
        return alpha.reshape(m)
    n, shape = real.shape[0], list(real.shape)
    fits = (0 < alpha.dim() <= real.dim() and alpha.shape[0] == n
            and all(a in (1, r) for a, r in zip(alpha.shape[1:], shape[1:])))
    if not fits:
        raise ValueError(
            f"{where} must hold M={m} values (one per group of pac={pac} samples) or lay them out "
            f"per sample over real's shape {shape} (leading axis {n}, each other axis 1 or "
            f"real's size there, e.g. [{n}], [{n}, 1] or {shape}), got shape {list(alpha.shape)}")
    a = alpha
    for axis in range(1, a.dim()):
        if a.shape[axis] > 1 and a.stride(axis) == 0:
            a = a.narrow(axis, 0, 1)
    a = a.reshape(m, -1)
    first = a[:, :1]
    mixed = (a != first).any(dim=1)
    if bool(mixed.any()):
        j = int(mixed.nonzero()[0, 0])
        raise ValueError(
            f"{where} (shape {list(alpha.shape)}) must hold one value per group of pac={pac} "
            f"samples, but group {j} holds different values (from {a[j].min().item()} to "
            f"{a[j].max().item()}); the fused penalty interpolates each group with one alpha")
    return first.reshape(m)


def norm_layout(norm_dims: NormDims, shape, pac: int = 1) -> Optional[Tuple[list, list, int]]:
    """None when the norm runs over every non-batch axis (the ops' own layout), else
    (permutation that puts the norm axes last, shape of the per-norm results, norm length)."""
    rank = len(shape)
    if norm_dims is None or (isinstance(norm_dims, str) and norm_dims == "all"):
        return None
    if isinstance(norm_dims, str):
        raise ValueError(f"norm_dims must be None, 'all', an axis or a sequence of axes, "
                         f"got {norm_dims!r}")
    dims = [norm_dims] if isinstance(norm_dims, int) else norm_dims
    try:
        dims = list(dims)
    except TypeError:
        raise TypeError(f"norm_dims must be None, 'all', an axis or a sequence of axes, got "
                        f"{type(norm_dims).__name__}") from None
    if not dims:
        raise ValueError("norm_dims must name at least one axis (None or 'all': every non-batch "
                         "axis)")
    axes = []
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int):
            raise TypeError(f"norm_dims must hold ints (axes of real), got {d!r}")
        if not -rank <= d < rank:
            raise ValueError(f"norm_dims holds axis {d}, out of range for real of shape "
                             f"{list(shape)} ({rank} axes)")
        d %= rank
        if d == 0:
            raise ValueError(f"norm_dims must not hold the batch axis 0 (got {norm_dims!r}): the "
                             f"penalty is per sample")
        if d in axes:
            raise ValueError(f"norm_dims names axis {d} twice ({norm_dims!r})")
        axes.append(d)
    if sorted(axes) == list(range(1, rank)):
        return None
    if pac != 1:
        raise ValueError(f"norm_dims={norm_dims!r} (a norm over some axes only) cannot be "
                         f"combined with pac={pac}, whose norm runs over whole groups of samples")
    kept = [d for d in range(1, rank) if d not in axes]
    return [0] + kept + axes, [shape[0]] + [shape[d] for d in kept], math.prod(
        shape[d] for d in axes)


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type == "cuda" and (a.index is None) != (b.index is None):
        current = torch.cuda.current_device()
        return (a.index if a.index is not None else current) == (
            b.index if b.index is not None else current)
    return a.index == b.index


def check_device(name: str, device, data: Tensor, data_name: str) -> torch.device:
    """`device` as a torch.device, where it is the device `data` lives on; else the error the
    code drawing alpha on `device` would meet, said plainly."""
    try:
        dev = torch.device(device)
    except (TypeError, RuntimeError):
        raise TypeError(f"{name} must be a torch.device or a device string such as 'cpu' or "
                        f"'cuda', got {device!r}") from None
    if not _same_device(dev, data.device):
        raise ValueError(
            f"{name} is {str(dev)!r} but {data_name} is on {data.device}: alpha is drawn on "
            f"{name}, as the replaced code draws it, and cannot meet data on another device "
            f"(the original fails there too); pass {name}={str(data.device)!r} or move the data")
    return dev
