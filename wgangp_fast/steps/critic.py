"""`CriticStep`: one critic update of a WGAN-GP-style loss in a single call, in any mode."""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, grad_and_value

from .. import _validate as V
from ..penalty import (
    KINDS,
    PENALTY_IMPLS,
    critic_scores,
    input_gradients,
    kind_settings,
    norm_penalty,
    penalty_points,
    per_group_alpha,
)
from .base import StepBase, count, side_effect_free, wide
from .capture import zero_static_grads
from .policy import COMPILED_MODES, choose_mode, unwrap

__all__ = ["CriticStep", "StepStats", "clip_weights"]


class StepStats(NamedTuple):
    """What a critic step returns (detached): the loss it minimised, the Wasserstein estimate
    E[D(real)] - E[D(fake)], the penalty term (lambda_gp included, before gp_every's weighting:
    what `gradient_penalty(..., lambda_gp=...)` returns; None on a step without it), the
    per-group gradient norms (with return_norms), and whether an fp16 GradScaler skipped the
    update (its gradients were not finite)."""

    loss: Tensor
    wasserstein: Tensor
    penalty: Optional[Tensor]
    norms: Optional[Tensor] = None
    skipped: bool = False


class CriticStep(StepBase):
    """One critic update of a WGAN-GP-style loss in a single call.

        step = CriticStep(critic, optimizer, lambda_gp=10.0, pac=1, mode="auto")
        stats = step(real, fake, *inputs)     # inputs: extra critic arguments (labels)

    Minimises E[D(fake)] - E[D(real)] + k * penalty, where the penalty (`kind`: "wgan-gp",
    "wgan-lp", "r1", "r2", "dragan" as in `gradient_penalty`, or None for no penalty) is taken on
    every gp_every-th call (the first included) with k = gp_every (lazy regularisation). real and
    fake are detached. `scaler` (an fp16 GradScaler) and `autocast` (torch.bfloat16 or
    torch.float16: the forwards and the penalty under torch.autocast) give mixed precision.

    Matching a training code:

    - alpha_fn(m, like) draws the interpolation weights as the code does (numpy, the CPU RNG then
      .to(device): see gradient_penalty); in eager mode at the point the code draws them (after
      the critic's forwards on real and fake), in the other modes before the step, outside the
      compiled or captured computation.
    - post_step(critic) runs after every update (weight clipping of the original WGAN:
      `post_step=clip_weights(0.01)`), inside the graph in the graph modes.
    - penalty_impl "autograd": the penalty's two ops in plain PyTorch, differentiated by autograd,
      for comparison with the fused ones (the same random draws, so the same values).

    A DistributedDataParallel critic works in every mode: the step runs the inner module and
    averages the gradients over the wrapper's process group before the update. Modes: see
    wgangp_fast.steps.
    """

    owner = "CriticStep"

    def __init__(self, critic: nn.Module, optimizer: torch.optim.Optimizer, *,
                 lambda_gp: float = 10.0, pac: int = 1, kind: Optional[str] = "wgan-gp",
                 mode: str = "auto", scaler=None, autocast: Optional[torch.dtype] = None,
                 gp_every: int = 1, return_norms: bool = False, backend: str = "auto",
                 alpha_fn: Optional[Callable] = None,
                 post_step: Optional[Callable[[nn.Module], None]] = None,
                 penalty_impl: str = "fused", warmup: int = 3, max_graphs: int = 8,
                 compile_options: Optional[dict] = None, simulate_graphs: bool = False):
        if not isinstance(critic, nn.Module):
            raise TypeError(f"critic must be an nn.Module, got {type(critic).__name__}")
        super().__init__(mode, [optimizer], scaler, autocast, warmup, max_graphs,
                         compile_options, simulate_graphs, ddp_modules=[critic])
        if kind is not None and kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))} or None, got "
                             f"{kind!r}")
        if penalty_impl not in PENALTY_IMPLS:
            raise ValueError(f"penalty_impl must be one of {', '.join(map(repr, PENALTY_IMPLS))}"
                             f", got {penalty_impl!r}")
        for name, fn in (("alpha_fn", alpha_fn), ("post_step", post_step)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
        if alpha_fn is not None and kind not in ("wgan-gp", "wgan-lp", "dragan"):
            raise ValueError(f"alpha_fn draws interpolation weights, which kind {kind!r} has "
                             f"none of")
        self.wrapped = critic
        self.critic = unwrap(critic)
        self.optimizer = optimizer
        self.kind = kind
        self.lambda_gp = V.finite("lambda_gp", lambda_gp)
        self.pac = count("pac", pac, 1)
        self.gp_every = count("gp_every", gp_every, 1)
        self.return_norms = V.flag("return_norms", return_norms)
        self.backend = backend
        self.alpha_fn = alpha_fn
        self.post_step = post_step
        self.penalty_impl = penalty_impl
        self.calls = 0
        self.target, self.one_sided, self.scale = (
            kind_settings(kind, self.lambda_gp) if kind is not None else (1.0, False, 0.0))
        self._compiled = None

    def _choose(self, device, *, mode=None, optimizers=None, scaler=None):
        """choose_mode for this critic; TrainStep asks it for the whole iteration (its mode,
        both optimisers, either scaler)."""
        return choose_mode(self.requested_mode if mode is None else mode, device, self.critic,
                           optimizers=self._optimizers if optimizers is None else optimizers,
                           scaler=self.scaler if scaler is None else scaler,
                           simulate_graphs=self.simulate_graphs)

    def regularises(self, call: int) -> bool:
        """Whether call number `call` (from 0) carries the penalty."""
        return self.kind is not None and call % self.gp_every == 0

    # -- the loss, in two formulations -------------------------------------------------------

    def _scores(self, out) -> Tensor:
        return wide(critic_scores(out))

    def _points(self, real, fake, alpha):
        return penalty_points(self.kind, real, fake, pac=self.pac, alpha=alpha,
                              backend=self.backend, impl=self.penalty_impl)

    def _penalty(self, grads, input_scale=1.0):
        return norm_penalty(grads, pac=self.pac, target=self.target, one_sided=self.one_sided,
                            input_scale=input_scale, scale=self.scale, backend=self.backend,
                            impl=self.penalty_impl)

    def _weighted(self, pen):
        return pen * self.gp_every if self.gp_every > 1 else pen

    def _eager_loss(self, real, fake, inputs, regularise, alpha):
        """The usual critic loss with the drop-in penalty (autograd's double backward):
        (Wasserstein term, weighted penalty or None, penalty, norms)."""
        d_real = self._scores(self.critic(real, *inputs)).mean()
        d_fake = self._scores(self.critic(fake, *inputs)).mean()
        wasserstein = d_real - d_fake
        weighted = pen = norms = None
        if regularise:
            if alpha is None and self.alpha_fn is not None:
                alpha = per_group_alpha(None, real, self.pac, alpha_fn=self.alpha_fn)
            x = self._points(real, fake, alpha)
            _, grads, inv_scale = input_gradients(self.critic, x, *inputs, scaler=self.scaler)
            pen, norms = self._penalty(grads, inv_scale)
            weighted = self._weighted(pen)
        return wasserstein, weighted, pen, norms

    def _functional_loss(self, params, frozen, real, fake, inputs, loss_scale, regularise,
                         alpha):
        """The same loss as a function of the parameters, the input gradient by torch.func.grad:
        what torch.compile can trace (it refuses autograd.grad's double backward)."""
        weights = {**params, **frozen}

        def critic(x):
            return self._scores(functional_call(self.critic, weights, (x, *inputs)))

        wasserstein = critic(real).mean() - critic(fake).mean()
        loss, pen, norms = -wasserstein, None, None
        if regularise:
            # r1 / r2 evaluate at the samples themselves (torch.func needs no requires_grad_)
            x = {"r1": real, "r2": fake}.get(self.kind)
            if x is None:
                x = self._points(real, fake, alpha)
            n = x.shape[0]
            if loss_scale is None:
                grads = grad(lambda x: critic(x).float().sum())(x)
            else:
                # S * mean(D), as input_gradients does under a GradScaler; n / S unscales
                grads = grad(lambda x: critic(x).float().sum() * (loss_scale / n))(x)
                grads = grads * (n / loss_scale)
            pen, norms = self._penalty(grads)
            loss = loss + self._weighted(pen)
        objective = loss if loss_scale is None else loss * loss_scale
        # torch.func's aux holds tensors only
        return objective, (loss, wasserstein) + ((pen, norms) if regularise else ())

    # -- the step bodies ---------------------------------------------------------------------

    @staticmethod
    def _pack(loss, wasserstein, pen) -> Tensor:
        values = [loss.detach(), wasserstein.detach()]
        if pen is not None:
            values.append(pen.detach().to(loss.dtype))
        return torch.stack(values)

    def _backward(self, loss: Tensor, **kwargs) -> None:
        (self.scaler.scale(loss) if self._scaling else loss).backward(**kwargs)

    def _update(self) -> bool:
        skipped = self._step_optimizer(self.optimizer)
        if self.post_step is not None:
            self.post_step(self.critic)
        return skipped

    def run_eager(self, real, fake, inputs, regularise, alpha=None, graphed=False):
        """The eager step: (stats [loss, wasserstein(, penalty)], norms, skipped)."""
        if graphed:
            zero_static_grads(self.optimizer)
        else:
            self.optimizer.zero_grad(set_to_none=True)
        with self.autocast_context(real.device, graphed):
            wasserstein, weighted, pen, norms = self._eager_loss(real, fake, inputs, regularise,
                                                                 alpha)
        loss = -wasserstein if weighted is None else weighted - wasserstein
        # Two backward calls, the penalty's first (CTGAN's order): the second one
        # accumulates into .grad in place, where one backward of the sum adds the terms' weight
        # gradients out of place; measured 1-4% faster per step on the CPU (README, "Whole
        # training steps"). The gradients are the same sums, in another order.
        if weighted is not None:
            self._backward(weighted)
        self._backward(-wasserstein)
        skipped = self._update()
        return self._pack(loss, wasserstein, pen), norms, skipped

    def _compiled_fn(self):
        if self._compiled is None:
            def step_fn(params, frozen, real, fake, inputs, loss_scale, regularise, alpha):
                return grad_and_value(self._functional_loss, has_aux=True)(
                    params, frozen, real, fake, inputs, loss_scale, regularise, alpha)

            self._compiled = self._compile(step_fn)
        return self._compiled

    def run_compiled(self, real, fake, inputs, regularise, alpha=None, graphed=False):
        """The compiled step: one graph for the loss and all gradients, then the optimiser."""
        params, frozen = {}, dict(self.critic.named_buffers())
        for name, p in self.critic.named_parameters():
            (params if p.requires_grad else frozen)[name] = p
        loss_scale = self.scaler.scale(torch.ones((), device=real.device)) if self._scaling \
            else None
        with self.autocast_context(real.device, graphed):
            grads, (_, aux) = self._compiled_fn()(params, frozen, real, fake, tuple(inputs),
                                                  loss_scale, regularise, alpha)
        loss, wasserstein, pen, norms = aux if regularise else (*aux, None, None)
        for name, p in params.items():
            if graphed:
                p.grad.copy_(grads[name])
            else:
                p.grad = grads[name]
        skipped = self._update()
        return self._pack(loss, wasserstein, pen), norms, skipped

    def run(self, mode, real, fake, inputs, regularise, alpha=None, graphed=False):
        """One step in `mode` ("eager" or "compile" bodies; graphed inside a capture)."""
        if mode in COMPILED_MODES:
            return self.run_compiled(real, fake, inputs, regularise, alpha, graphed)
        return self.run_eager(real, fake, inputs, regularise, alpha, graphed)

    def _graph_body(self, real, fake, *rest):
        *inputs, (regularise, drawn) = rest
        # alpha_fn's draw, when there is one, is the last static input: fresh at every replay
        alpha = inputs.pop() if drawn else None
        stats, norms, _ = self.run(self.mode, real, fake, tuple(inputs), regularise, alpha,
                                   graphed=True)
        return stats, norms

    # -- the loss without an update -----------------------------------------------------------

    def loss(self, real: Tensor, fake: Tensor, *inputs, alpha: Optional[Tensor] = None,
             regularise: bool = True) -> Tensor:
        """The critic loss of one step as this step computes it (the weighted penalty included
        with `regularise`), in eager autograd and differentiable, with no update and no
        gradient averaging: for inspecting a step, or checking it against another code.
        `alpha` fixes the interpolation weights (any layout gradient_penalty takes)."""
        real, fake, alpha = self._inspected(real, fake, alpha)
        with self.autocast_context(real.device):
            wasserstein, weighted, _, _ = self._eager_loss(
                real, fake, inputs, regularise and self.kind is not None, alpha)
        return -wasserstein if weighted is None else weighted - wasserstein

    def penalty(self, real: Tensor, fake: Tensor, *inputs,
                alpha: Optional[Tensor] = None) -> Tensor:
        """The penalty term of this step (lambda_gp included, not gp_every's weighting), as
        StepStats.penalty reports it, differentiable; no update."""
        if self.kind is None:
            raise ValueError("this CriticStep has no penalty (kind=None)")
        real, fake, alpha_ = self._inspected(real, fake, alpha)
        with self.autocast_context(real.device):
            x = self._points(real, fake, alpha_)
            _, grads, inv_scale = input_gradients(self.critic, x, *inputs, scaler=self.scaler)
            return self._penalty(grads, inv_scale)[0]

    def _inspected(self, real, fake, alpha):
        V.pair(real, fake)
        if self.kind is not None:
            V.pac(self.pac, real.shape[0])
        if alpha is not None:
            alpha = per_group_alpha(alpha, real, self.pac)
        return real.detach(), fake.detach(), alpha

    # -- the call ----------------------------------------------------------------------------

    def draws_alpha_outside(self, mode: str) -> bool:
        """Whether alpha_fn's draw happens before the step body (every mode but eager)."""
        return self.alpha_fn is not None and mode != "eager"

    def draw_alpha(self, real: Tensor) -> Tensor:
        """alpha_fn's draw for a batch like `real`, as the M per-group values on real's device."""
        return per_group_alpha(None, real, self.pac, alpha_fn=self.alpha_fn).to(real.device)

    def check_critic_output(self, real: Tensor, inputs) -> None:
        """The critic's output checked once before a compiled mode traces it (inside a trace a
        wrong output only shows as "could not trace"), with no trace left."""
        with side_effect_free([self.critic], real.device), self.autocast_context(real.device):
            critic_scores(self.critic(real, *inputs))

    def __call__(self, real: Tensor, fake: Tensor, *inputs) -> StepStats:
        V.pair(real, fake)
        real, fake = real.detach(), fake.detach()
        if self.kind is not None:
            V.pac(self.pac, real.shape[0])
        self._resolve(real.device, lambda: self.check_critic_output(real, inputs))
        regularise = self.regularises(self.calls)
        self.calls += 1
        alpha = self.draw_alpha(real) if regularise and self.draws_alpha_outside(self.mode) \
            else None

        def graphed():
            drawn = alpha is not None
            tensors = [real, fake, *inputs] + ([alpha] if drawn else [])
            stats, norms = self._runner((regularise, drawn), tensors, (regularise, drawn))
            return (stats.clone(), norms.clone() if norms is not None and self.return_norms
                    else None, False)

        stats, norms, skipped = self._execute(
            graphed, lambda mode: self.run(mode, real, fake, inputs, regularise, alpha))
        return StepStats(stats[0], stats[1], stats[2] if regularise else None,
                         norms.detach() if self.return_norms and norms is not None else None,
                         skipped)


def clip_weights(c: float) -> Callable[[nn.Module], None]:
    """A post_step hook: every parameter of the critic clamped to [-c, c] after each update
    (the original WGAN's Lipschitz constraint, Arjovsky et al. 2017)."""
    c = V.finite("c", c, positive=True)

    @torch.no_grad()
    def clip(critic: nn.Module) -> None:
        for p in critic.parameters():
            p.clamp_(-c, c)

    return clip
