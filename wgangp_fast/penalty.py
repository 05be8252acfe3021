"""The drop-in: the whole gradient penalty of a critic in one call, and wrappers with the
signatures of the code it replaces (CTGAN's `calc_gradient_penalty`, a loss class)."""

from __future__ import annotations

import functools
import inspect
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

from . import _validate as V
from . import testing
from .layouts import (
    Batch,
    Groups,
    NormDims,
    as_batch,
    batch_pair,
    check_device,
    norm_layout,
    penalty_groups,
    per_group_alpha,
)
from .ops import gradient_norm_penalty, interpolate

__all__ = ["KINDS", "PENALTY_IMPLS", "NormDims", "PenaltyCall", "WassersteinGPLoss",
           "calc_gradient_penalty", "check_device", "critic_scores", "gradient_penalty",
           "input_gradients", "kind_settings", "norm_layout", "norm_penalty", "penalty_call",
           "penalty_of_gradients", "penalty_points", "per_group_alpha"]

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


def input_gradients(critic, x, *inputs, scaler=None):
    """(critic output, d critic / d x with create_graph=True, the factor that unscales it).

    x is a tensor, or a list or tuple of tensors for a critic of several inputs (the gradients
    then a tuple, one per tensor). With an enabled AMP GradScaler of scale S, the gradient is taken
    of S * mean(output) in float32 and the returned factor is N / S, to be folded into the
    penalty's input_scale (PyTorch's AMP recipe for gradient penalties). The mean matters: the
    scaler tunes S for mean-reduced losses, and a per-sample gradient of S itself overflows
    float16 at the default S = 2^16.
    """
    if not torch.is_grad_enabled():
        raise RuntimeError(
            "the gradient penalty needs autograd (it differentiates the critic with respect to "
            "its input), but it was called with gradients disabled (inside torch.no_grad() or "
            "torch.inference_mode()): call it outside that block, or wrap the call in "
            "torch.enable_grad()")
    several = isinstance(x, (list, tuple))
    parts = list(x) if several else [x]
    for part in parts:
        if not part.requires_grad:
            part.requires_grad_(True)
    out = critic_scores(critic(x, *inputs))
    if not out.requires_grad:
        raise RuntimeError(_unconnected("its output does not require grad"))
    if scaler is not None and scaler.is_enabled():
        n = parts[0].shape[0]
        grads = torch.autograd.grad(outputs=scaler.scale(out.float().sum() / n), inputs=parts,
                                    create_graph=True, retain_graph=True, allow_unused=True)
        factor = n / float(scaler.get_scale())
    else:
        grads = torch.autograd.grad(outputs=out, inputs=parts, grad_outputs=torch.ones_like(out),
                                    create_graph=True, retain_graph=True, allow_unused=True)
        factor = 1.0
    for i, g in enumerate(grads):
        if g is None:
            which = f"input x[{i}]" if several else "input"
            raise RuntimeError(_unconnected(f"its output does not depend on its {which}"))
    return out, (tuple(grads) if several else grads[0]), factor


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


def penalty_points(kind: str, real, fake, *, pac: int = 1, alpha: Optional[Tensor] = None,
                   generator: Optional[torch.Generator] = None, dragan_c: float = 0.5,
                   backend: str = "auto", impl: str = "fused"):
    """Where each kind of penalty evaluates the critic's gradient.

    wgan-gp / wgan-lp: interpolates of real and fake (one alpha per group of `pac` samples);
    r1: the real samples; r2: the fake samples; dragan: interpolates between the real samples and a
    perturbation real + dragan_c * std(real) * U[0, 1) (Kodali et al.), drawn before alpha.
    real and fake may be lists or tuples of tensors (a critic of several inputs): every tensor is
    interpolated with the same alpha, and the points come back in the same kind of container.
    `impl` "autograd" interpolates in plain PyTorch ops (the same draws, the same values).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}, got {kind!r}")
    if kind.startswith("wgan"):
        r, f = batch_pair(real, fake)
    else:
        r = as_batch("real", real) if kind != "r2" else None
        f = as_batch("fake", fake) if kind == "r2" else None
    if kind in ("r1", "r2"):
        b = r if kind == "r1" else f
        return b.pack([t.detach().requires_grad_(True) for t in b.parts])
    if kind == "dragan":
        dragan_c = V.finite("dragan_c", dragan_c, minimum=0.0)
        noise = [torch.rand(t.shape, device=t.device, dtype=t.dtype, generator=generator)
                 for t in r.parts]
        f = r
        r = Batch(tuple(t + dragan_c * t.std() * e for t, e in zip(r.parts, noise)), r.container)
    mix = interpolate if impl == "fused" else _autograd_interpolate
    if r.container is None:
        return mix(r.first, f.first, alpha, pac=pac, generator=generator, backend=backend)
    if alpha is None:
        # one draw for every tensor, the one interpolate itself makes for a single tensor
        alpha = torch.rand(r.first.shape[0] // pac, device=r.first.device, generator=generator,
                           dtype=torch.get_default_dtype())
    return r.pack([mix(a, b, alpha, pac=pac, generator=generator, backend=backend)
                   for a, b in zip(r.parts, f.parts)])


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


def penalty_of_gradients(grads, groups: Groups, *, target: float = 1.0,
                         one_sided: bool = False, eps: float = 0.0, input_scale: float = 1.0,
                         weight: Optional[Tensor] = None, reduction: str = "mean",
                         scale: float = 1.0, backend: str = "auto", return_norms: bool = False):
    """The fused penalty of the critic's input gradients, grouped as `groups` says.

    grads: one tensor, or one per input of a critic of several inputs; then each tensor's
    per-group norms come from the fused norm op (no copy of the gradients into one tensor) and
    the group's norm is sqrt(sum of their squares + eps), on M-sized vectors.
    """
    parts = tuple(grads) if isinstance(grads, (list, tuple)) else (grads,)
    if len(parts) > 1:
        return _joint_penalty(parts, groups.norm_per, target=target, one_sided=one_sided,
                              eps=eps, input_scale=input_scale, weight=weight,
                              reduction=reduction, scale=scale, backend=backend,
                              return_norms=return_norms)
    g, pac, layout = parts[0], groups.norm_per, groups.axes
    if layout is not None:
        g, pac = g.permute(layout[0]).reshape(-1, layout[2]), 1
    out = gradient_norm_penalty(g, pac=pac, target=target, one_sided=one_sided, eps=eps,
                                input_scale=input_scale, weight=weight, reduction=reduction,
                                scale=scale, backend=backend, return_norms=return_norms)
    if layout is None:
        return out
    penalty, norms = out if return_norms else (out, None)
    if reduction == "none":
        penalty = penalty.reshape(layout[1])
    return (penalty, norms.reshape(layout[1])) if return_norms else penalty


def _joint_penalty(parts, pac, *, target, one_sided, eps, input_scale, weight, reduction, scale,
                   backend, return_norms):
    """One norm per group over several tensors' gradients: each tensor's group norms by the
    fused op (differentiable twice through its norms output), combined in M-sized eager ops."""
    target = V.finite("target", target, minimum=0.0)
    eps = V.finite("eps", eps, minimum=0.0)
    if not (isinstance(scale, Tensor) and scale.requires_grad):
        scale = V.finite("scale", scale)
    red = V.reduction(reduction)
    each = torch.stack([gradient_norm_penalty(g, pac=pac, input_scale=input_scale,
                                              backend=backend, return_norms=True)[1]
                        for g in parts])
    # vector_norm keeps the zero subgradient at a zero norm, as the op does; eps keeps it away
    norms = (torch.linalg.vector_norm(each, dim=0) if eps == 0.0
             else torch.sqrt((each * each).sum(0) + eps))
    u = norms - target
    if one_sided:
        u = torch.clamp(u, min=0.0)
    phi = u * u
    if weight is not None:
        phi = phi * V.group_vector("weight", weight, norms.shape[0], parts[0]).to(phi.dtype)
    out = phi if red == 0 else (phi.sum() if red == 2 else phi.mean())
    out = (out * scale).to(parts[0].dtype)
    return (out, norms) if return_norms else out


class PenaltyCall:
    """One gradient_penalty call, checked, in its three phases: `points()` draws alpha and
    interpolates (or takes the kind's points), `gradients(x)` calls the critic and takes its
    input gradient, `penalty(grads, input_scale)` the fused norms and penalty. gradient_penalty
    runs them in order; the first-call check of a patched method runs the first and the last on
    what the original computed, so the critic runs once (wgangp_fast.integrations)."""

    def __init__(self, critic, real, fake, inputs, *, lambda_gp, pac, alpha_per, norm_per, kind,
                 alpha, generator, target, one_sided, eps, scaler, weight, reduction, dragan_c,
                 backend, alpha_fn, norm_dims, detach_inputs, critic_kwargs, return_norms):
        if not callable(critic):
            raise TypeError(f"critic must be callable (an nn.Module), got {type(critic).__name__}")
        lambda_gp = V.finite("lambda_gp", lambda_gp)
        if not isinstance(detach_inputs, bool):
            raise TypeError(f"detach_inputs must be a bool, got {detach_inputs!r}")
        self.target, self.one_sided, self.scale = kind_settings(kind, lambda_gp, target,
                                                                one_sided)
        if critic_kwargs:
            if not isinstance(critic_kwargs, dict):
                raise TypeError(f"critic_kwargs must be a dict of keyword arguments for the "
                                f"critic, got {type(critic_kwargs).__name__}")
            critic = functools.partial(critic, **critic_kwargs)
        if detach_inputs:
            real, fake = _detached(real), _detached(fake)
        points_of = fake if kind == "r2" else real
        self.batch = batch = as_batch("fake" if kind == "r2" else "real", points_of) \
            if points_of is not None else None
        self.groups = (penalty_groups(batch, pac=pac, alpha_per=alpha_per, norm_per=norm_per,
                                      norm_dims=norm_dims)
                       if batch is not None else Groups(pac, pac, None))
        self.critic, self.real, self.fake, self.inputs = critic, real, fake, inputs
        self.critic_kwargs = dict(critic_kwargs or {})
        self.kind, self.alpha, self.alpha_fn, self.generator = kind, alpha, alpha_fn, generator
        self.eps, self.scaler, self.weight, self.reduction = eps, scaler, weight, reduction
        self.dragan_c, self.backend, self.return_norms = dragan_c, backend, return_norms
        self._alpha_name = "pac" if alpha_per is None else "alpha_per"

    def points(self):
        alpha = self.alpha
        if (alpha is not None or self.alpha_fn is not None) and self.batch is not None:
            alpha = per_group_alpha(alpha, self.batch.first, self.groups.alpha_per,
                                    alpha_fn=self.alpha_fn, group_name=self._alpha_name)
        return penalty_points(self.kind, self.real, self.fake, pac=self.groups.alpha_per,
                              alpha=alpha, generator=self.generator, dragan_c=self.dragan_c,
                              backend=self.backend)

    def gradients(self, x):
        """(the critic's input gradients at x, the factor that unscales them)."""
        _, grads, inv_scale = input_gradients(self.critic, x, *self.inputs, scaler=self.scaler)
        return grads, inv_scale

    def penalty(self, grads, input_scale: float = 1.0):
        return penalty_of_gradients(grads, self.groups, target=self.target,
                                    one_sided=self.one_sided, eps=self.eps,
                                    input_scale=input_scale, weight=self.weight,
                                    reduction=self.reduction, scale=self.scale,
                                    backend=self.backend, return_norms=self.return_norms)

    def run(self):
        return self.penalty(*self.gradients(self.points()))


def _detached(value):
    """real or fake detached: a tensor, or each tensor of a list or tuple."""
    if isinstance(value, Tensor):
        return value.detach()
    if isinstance(value, (list, tuple)):
        parts = [t.detach() if isinstance(t, Tensor) else t for t in value]
        return parts if isinstance(value, list) else tuple(parts)
    return value


def gradient_penalty(critic, real, fake, *inputs, lambda_gp: float = 10.0, pac: int = 1,
                     alpha_per=None, norm_per=None, kind: str = "wgan-gp",
                     alpha: Optional[Tensor] = None, generator: Optional[torch.Generator] = None,
                     target: Optional[float] = None, one_sided: Optional[bool] = None,
                     eps: float = 0.0, scaler=None, weight: Optional[Tensor] = None,
                     reduction: str = "mean", dragan_c: float = 0.5,
                     backend: str = "auto", alpha_fn: Optional[Callable] = None,
                     norm_dims: NormDims = None, detach_inputs: bool = True,
                     critic_kwargs: Optional[dict] = None, return_norms: bool = False):
    """lambda_gp * mean_j (||grad_x critic(x)[group j]|| - target)^2 at the points of `kind`.

    The drop-in for a hand-written gradient_penalty (kind "wgan-gp", the default): draws one alpha
    per group of `pac` samples exactly as they do (same RNG use, same value), calls
    `critic(x_hat, *inputs, **critic_kwargs)` (the first element if it returns a tuple),
    differentiates with create_graph=True and applies the fused penalty. Works with separate
    `pen.backward(retain_graph=True); loss.backward()` calls and with one backward of the sum.
    Pass the AMP `scaler` when training with a GradScaler.

    Other kinds: "wgan-lp" (one-sided, Petzka et al.), "r1" / "r2" (zero-centred on real / fake
    samples, Mescheder et al.: lambda_gp is gamma and the result is gamma/2 * E||grad||^2),
    "dragan" (perturbed real samples, target 1). `target` and `one_sided` default to the kind's.

    Matching the code it replaces:
    - pac: samples per group for both alpha and the norm (PacGAN, CTGAN's pac). alpha_per and
      norm_per set them apart ("sample", "batch" or a number of samples; default pac):
      alpha_per="sample", norm_per="batch" is one alpha per sample and one norm over the whole
      batch (gretel's DGAN); alpha_per="batch", norm_per="batch" one alpha and one norm for the
      batch (torchgan's WassersteinGradientPenalty). Give pac or these, not both.
    - real and fake may be lists or tuples of tensors with one batch size, for a critic of
      several inputs: the critic gets a list (tuple) of their interpolates, each made with the
      same alpha, and each group's norm runs over the gradients of all of them together.
    - alpha: M = N / alpha_per values in any shape that flattens to M, or any per-sample layout
      of the batch ([N], [N, 1], [N, 1, 1, 1], expanded to real's full shape, ...) holding one
      value per group (checked). alpha_fn(m, like) -> such a tensor draws it instead, for draws
      other than `torch.rand(M)` on real's device (numpy, the CPU RNG then .to(device)); `like`
      is real (its first tensor, for several inputs).
    - norm_dims: the axes the norm runs over when it is not every non-batch axis (a code that
      writes `grads.norm(2, dim=1)` on [B, L, V] data: norm_dims=1); the penalty is then per
      (sample, remaining axes) element, averaged. None: every non-batch axis of each group.
      "all" (or every axis, the batch's included, such as (0, 1, 2, 3)): one norm over the
      whole batch, as `grads.norm(2)` without dim takes it (norm_per="batch").
    - detach_inputs (default True): real and fake are detached before interpolation, as codes
      that pass `.data` or `.detach()` have it; False keeps their graph (the penalty then reaches
      the generator too, as CTGAN's own method does).
    - return_norms: also return the gradient norms (one per norm group, or the shape of real
      without the norm_dims axes), differentiable like the penalty.
    """
    return PenaltyCall(critic, real, fake, inputs, lambda_gp=lambda_gp, pac=pac,
                       alpha_per=alpha_per, norm_per=norm_per, kind=kind, alpha=alpha,
                       generator=generator, target=target, one_sided=one_sided, eps=eps,
                       scaler=scaler, weight=weight, reduction=reduction, dragan_c=dragan_c,
                       backend=backend, alpha_fn=alpha_fn, norm_dims=norm_dims,
                       detach_inputs=detach_inputs, critic_kwargs=critic_kwargs,
                       return_norms=return_norms).run()


def penalty_call(critic, real, fake, *inputs, **options) -> PenaltyCall:
    """gradient_penalty's call, its arguments checked and its defaults applied, not yet run."""
    bound = _GRADIENT_PENALTY.bind(critic, real, fake, *inputs, **options)
    bound.apply_defaults()
    a = dict(bound.arguments)
    return PenaltyCall(a.pop("critic"), a.pop("real"), a.pop("fake"), a.pop("inputs"), **a)


_GRADIENT_PENALTY = inspect.signature(gradient_penalty)


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
    """A WGAN-GP loss object as training scripts write them: `critic_loss(D, real, fake)` ->
    (loss, info dict)."""

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
