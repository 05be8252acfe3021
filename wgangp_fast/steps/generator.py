"""`GeneratorStep`: one generator update, -E[D(G(z))], in a single call, in any mode."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .. import _validate as V
from ..penalty import critic_scores
from .base import StepBase, check_batch_norm_batch, side_effect_free, wide
from .capture import zero_static_grads
from .policy import COMPILED_MODES, choose_mode, unwrap

__all__ = ["GeneratorStep"]


class GeneratorStep(StepBase):
    """One generator update in a single call: minimises -E[D(G(z))].

        step = GeneratorStep(generator, critic, optimizer, mode="auto")
        loss_g = step(z, *inputs)       # inputs: extra critic arguments

    With `conditional` the generator takes the inputs too, G(z, *inputs) (a class-conditional
    generator given the labels that the critic also sees); otherwise G(z).

    The critic's parameters are held fixed (detached: the step computes no critic gradients).
    BatchNorm in the generator is fine in every mode (a batch of one is refused: BatchNorm needs
    two samples). Modes as for CriticStep; "compile" compiles the forward and runs its compiled
    backward through autograd. A DistributedDataParallel generator works in every mode (its
    gradients averaged over the process group before the update).
    """

    owner = "GeneratorStep"

    def __init__(self, generator: nn.Module, critic: nn.Module,
                 optimizer: torch.optim.Optimizer, *, mode: str = "auto", scaler=None,
                 autocast: Optional[torch.dtype] = None, warmup: int = 3, max_graphs: int = 8,
                 compile_options: Optional[dict] = None, simulate_graphs: bool = False,
                 conditional: bool = False):
        for name, m in (("generator", generator), ("critic", critic)):
            if not isinstance(m, nn.Module):
                raise TypeError(f"{name} must be an nn.Module, got {type(m).__name__}")
        super().__init__(mode, [optimizer], scaler, autocast, warmup, max_graphs,
                         compile_options, simulate_graphs, ddp_modules=[generator])
        self.wrapped = generator
        self.generator = unwrap(generator)
        self.critic = unwrap(critic)
        self.optimizer = optimizer
        self.conditional = V.flag("conditional", conditional)
        self._compiled = None

    def _choose(self, device):
        return choose_mode(self.requested_mode, device, self.critic,
                           optimizers=self._optimizers, scaler=self.scaler, check_critic=False,
                           simulate_graphs=self.simulate_graphs)

    def generate(self, z: Tensor, inputs=()) -> Tensor:
        """G(z), or G(z, *inputs) for a conditional generator."""
        return self.generator(z, *inputs) if self.conditional else self.generator(z)

    def _loss(self, z, *inputs):
        fixed = {n: p.detach() for n, p in self.critic.named_parameters()}
        fake = self.generate(z, inputs)
        return -wide(critic_scores(functional_call(self.critic, fixed, (fake, *inputs)))).mean()

    def run(self, mode, z, inputs, graphed=False) -> Tensor:
        """One step in `mode`; returns the detached loss."""
        if graphed:
            zero_static_grads(self.optimizer)
        else:
            self.optimizer.zero_grad(set_to_none=True)
        loss_fn = self._loss
        if mode in COMPILED_MODES:
            if self._compiled is None:
                self._compiled = self._compile(self._loss)
            loss_fn = self._compiled
        with self.autocast_context(z.device, graphed):
            loss = loss_fn(z, *inputs)
        (self.scaler.scale(loss) if self._scaling else loss).backward()
        self._step_optimizer(self.optimizer)
        return loss.detach()

    def _graph_body(self, z, *rest):
        *inputs, _ = rest
        return (self.run(self.mode, z, tuple(inputs), graphed=True),)

    def check_batch(self, n: int) -> None:
        check_batch_norm_batch(self.generator, n, self.owner, "generator")

    def check_critic_output(self, z: Tensor, inputs) -> None:
        """As CriticStep's: the critic's output on generated samples checked once before a
        compiled mode traces it, with no trace left."""
        with side_effect_free([self.generator, self.critic], z.device), \
                self.autocast_context(z.device):
            critic_scores(self.critic(self.generate(z, inputs), *inputs))

    def __call__(self, z: Tensor, *inputs) -> Tensor:
        V.tensor("z", z)
        self.check_batch(z.shape[0])
        self._resolve(z.device, lambda: self.check_critic_output(z, inputs))
        return self._execute(lambda: self._runner(None, [z, *inputs], None)[0].clone(),
                             lambda mode: self.run(mode, z, inputs))
