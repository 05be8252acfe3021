"""`TrainStep`: a whole WGAN-GP iteration (n_critic critic steps, then a generator step) in one
call, captured as one CUDA graph in the graph modes."""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .. import _validate as V
from .base import StepBase, count
from .critic import CriticStep, StepStats
from .generator import GeneratorStep

__all__ = ["TrainStats", "TrainStep"]


def _described(y) -> str:
    if isinstance(y, Tensor):
        return f"a tensor of shape {list(y.shape)} on {y.device}"
    return type(y).__name__


class TrainStats(NamedTuple):
    """What a training iteration returns: the last critic step's StepStats (its penalty and
    norms those of the iteration's last step that carried the penalty), the generator loss
    -E[D(G(z))], and whether an fp16 GradScaler skipped the update of that penalty's step."""

    critic: StepStats
    loss_g: Tensor
    penalty_skipped: bool = False


class TrainStep(StepBase):
    """A whole WGAN-GP iteration (Gulrajani et al., Algorithm 1) in one call: n_critic critic
    steps, each on its own real batch and fresh noise, then one generator step.

        train = TrainStep(CriticStep(critic, opt_c), GeneratorStep(generator, critic, opt_g),
                          latent_dim=128, n_critic=5)
        stats = train(reals)          # n_critic real batches: a sequence or a [n_critic, B, ...]
        stats = train(reals, labels, generator_labels)     # a conditional run

    Conditional runs: `labels` holds one label batch per real batch (row i of `labels[k]` is the
    class of `reals[k][i]`) and `generator_labels` the labels of the generator step's samples. The
    critic step's fakes are G(z, labels[k]) (GeneratorStep(conditional=True); G(z) otherwise), so
    real and fake share their labels row by row and the penalty interpolates samples of one
    class; the critic is called critic(x, labels).

    Noise is torch.randn(B, latent_dim) on the batches' device; the critic's fakes are G(z)
    under no_grad. In the graph modes the whole iteration is one CUDA graph (the noise drawn
    inside it, fresh on each replay). `mode` defaults to the critic step's; the sub-steps'
    settings (penalty, gp_every, scaler, autocast, hooks) apply, their own mode is not used.
    """

    owner = "TrainStep"
    # The sub-steps' optimisers step eagerly here. A compiled optimizer.step keeps its graphs in
    # the cache of torch's own step function (torch's wrapper breaks the graph before it), which
    # dynamo shares between every optimiser of a class and stops compiling past its recompile
    # limit: a run could then round differently from its own resumed copy.
    compiles_optimizer_steps = False

    def __init__(self, critic_step: CriticStep, generator_step: GeneratorStep, *,
                 latent_dim, n_critic: int = 5, mode: Optional[str] = None,
                 warmup: Optional[int] = None, max_graphs: Optional[int] = None):
        if not isinstance(critic_step, CriticStep):
            raise TypeError(f"critic_step must be a CriticStep, got {type(critic_step).__name__}")
        if not isinstance(generator_step, GeneratorStep):
            raise TypeError(f"generator_step must be a GeneratorStep, got "
                            f"{type(generator_step).__name__}")
        if critic_step.autocast != generator_step.autocast:
            raise ValueError(f"critic_step and generator_step must use one autocast dtype, got "
                             f"{critic_step.autocast} and {generator_step.autocast}")
        c = critic_step
        super().__init__(c.requested_mode if mode is None else mode,
                         [c.optimizer, generator_step.optimizer], c.scaler, c.autocast,
                         c.warmup if warmup is None else warmup,
                         c.max_graphs if max_graphs is None else max_graphs,
                         c.compile_options, c.simulate_graphs)
        self.critic_step = critic_step
        self.generator_step = generator_step
        shape = (latent_dim,) if not isinstance(latent_dim, (tuple, list, torch.Size)) \
            else tuple(latent_dim)
        self.latent_shape = tuple(count("latent_dim", d, 1) for d in shape)
        self.n_critic = count("n_critic", n_critic, 1)

    def _choose(self, device):
        c, g = self.critic_step, self.generator_step
        return c._choose(device, mode=self.requested_mode, optimizers=self._optimizers,
                         scaler=c.scaler or g.scaler)

    @property
    def _scaling(self) -> bool:
        # the sub-steps' scalers, whichever is set now (the trainer may replace them)
        return self.critic_step._scaling or self.generator_step._scaling

    def _noise(self, like: Tensor) -> Tensor:
        return torch.randn(like.shape[0], *self.latent_shape, device=like.device)

    def _iteration(self, mode, reals, labels, pattern, alphas, graphed=False):
        """(stats of the last critic step, the last penalty and norms of the iteration (None
        where no step carried it), the generator loss, whether the last step and the last
        penalty's step were skipped). `labels`: n_critic + 1 label batches (the generator
        step's last), or None."""
        c, g = self.critic_step, self.generator_step
        pen = norms = None
        pen_skipped = False
        inputs = [()] * (self.n_critic + 1) if labels is None else [(y,) for y in labels]
        for real, ins, regularise, alpha in zip(reals, inputs, pattern, alphas):
            with torch.no_grad(), self.autocast_context(real.device, graphed):
                fake = g.generate(self._noise(real), ins)
            stats, step_norms, skipped = c.run(mode, real, fake.to(real.dtype), ins, regularise,
                                               alpha, graphed)
            if regularise:
                pen, norms, pen_skipped = stats[2], step_norms, skipped
        # the generator step's batch: its labels' count in a conditional run
        loss_g = g.run(mode, self._noise(reals[0] if labels is None else labels[-1]),
                       inputs[-1], graphed)
        return stats, pen, norms, loss_g, skipped, pen_skipped

    def _graph_body(self, *rest):
        *tensors, (pattern, drawn, labelled) = rest
        reals = tensors[:self.n_critic]
        rest_tensors = tensors[self.n_critic:]
        labels = None
        if labelled:
            labels = rest_tensors[:self.n_critic + 1]
            rest_tensors = rest_tensors[self.n_critic + 1:]
        alphas = iter(rest_tensors)
        per_step = [next(alphas) if d else None for d in drawn]
        return self._iteration(self.mode, reals, labels, pattern, per_step, graphed=True)[:4]

    def _check_labels(self, reals, labels, generator_labels):
        """labels and generator_labels as n_critic + 1 detached label batches, or None."""
        if labels is None and generator_labels is None:
            return None
        if labels is None or generator_labels is None:
            raise ValueError("a conditional iteration needs both labels (one batch per real "
                             "batch) and generator_labels (the generator step's)")
        if isinstance(labels, Tensor):
            labels = list(labels.unbind(0)) if labels.dim() > 1 else [labels]
        labels = list(labels)
        if len(labels) != self.n_critic:
            raise ValueError(f"labels must hold n_critic={self.n_critic} label batches, got "
                             f"{len(labels)}")
        for i, (y, r) in enumerate(zip(labels, reals)):
            if not isinstance(y, Tensor) or y.dim() == 0 or y.shape[:1] != r.shape[:1] \
                    or y.device != r.device:
                raise ValueError(f"labels[{i}] must hold one label per sample of reals[{i}] "
                                 f"({r.shape[0]} on {r.device}), got "
                                 f"{_described(y)}")
        g = generator_labels
        if not isinstance(g, Tensor) or g.dim() == 0 or g.shape[0] == 0 \
                or g.device != reals[0].device:
            raise ValueError(f"generator_labels must hold one label per generated sample on "
                             f"{reals[0].device}, got {_described(g)}")
        return [y.detach() for y in labels] + [generator_labels.detach()]

    def __call__(self, reals, labels=None, generator_labels=None) -> TrainStats:
        if isinstance(reals, Tensor):
            reals = list(reals.unbind(0)) if reals.dim() > 1 else [reals]
        reals = [r.detach() for r in reals]
        if len(reals) != self.n_critic:
            raise ValueError(f"reals must hold n_critic={self.n_critic} real batches, got "
                             f"{len(reals)}")
        for i, r in enumerate(reals):
            V.tensor(f"reals[{i}]", r)
            if r.shape != reals[0].shape:
                raise ValueError(f"the real batches must share one shape, got {list(r.shape)} "
                                 f"at {i} and {list(reals[0].shape)} at 0")
        ys = self._check_labels(reals, labels, generator_labels)
        c, g = self.critic_step, self.generator_step
        if c.kind is not None:
            V.pac(c.pac, reals[0].shape[0])
        g.check_batch(reals[0].shape[0])
        first = () if ys is None else (ys[0],)
        self._resolve(reals[0].device, lambda: c.check_critic_output(reals[0], first))
        pattern = tuple(c.regularises(c.calls + i) for i in range(self.n_critic))
        c.calls += self.n_critic
        alphas = [c.draw_alpha(r) if regularise and c.draws_alpha_outside(self.mode) else None
                  for r, regularise in zip(reals, pattern)]

        def graphed():
            drawn = tuple(a is not None for a in alphas)
            key = (pattern, drawn, ys is not None)
            tensors = reals + (ys or []) + [a for a in alphas if a is not None]
            stats, pen, norms, loss_g = self._runner(key, tensors, key)
            return (stats.clone(), pen.clone() if pen is not None else None,
                    norms.clone() if norms is not None and c.return_norms else None,
                    loss_g.clone(), False, False)

        stats, pen, norms, loss_g, skipped, pen_skipped = self._execute(
            graphed, lambda mode: self._iteration(mode, reals, ys, pattern, alphas))
        critic = StepStats(stats[0], stats[1], pen,
                           norms.detach() if c.return_norms and norms is not None else None,
                           skipped)
        return TrainStats(critic, loss_g, pen_skipped)
