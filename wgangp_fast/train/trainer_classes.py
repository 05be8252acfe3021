"""What the trainer does for a class-conditional run (`--conditional`): the check that the data
has labels, the conditional models (wgangp_fast.train.models_conditional), the labels of the
samples it draws, and the picture of one row per class. A mixin of WGANGPTrainer."""

from __future__ import annotations

from typing import Any, List, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from .models_conditional import ConcatPacCritic, ConditionalGenerator, ProjectionCritic

__all__ = ["ConditionalRun"]


class ConditionalRun:
    """WGANGPTrainer's conditional parts; `class_names` is None in an unconditional run."""

    def _check_conditional(self) -> List[str] | None:
        """The class names of a conditional run (None otherwise); a conditional run on data
        without labels is refused here, before any model is built."""
        cfg, ds = self.config, self.dataset
        if not cfg.conditional:
            return None
        labels = getattr(ds, "labels", None)
        if labels is None:
            raise ValueError(f"--conditional needs a labelled dataset (an --images folder with "
                             f"one subfolder per class, digits, mnist, fashion-mnist, cifar10, "
                             f"or a --csv table with --label-column); dataset {cfg.dataset!r} "
                             f"({getattr(ds, 'name', '')}) has no labels")
        names = getattr(ds, "class_names", None) or [str(k) for k in range(int(labels.max()) + 1)]
        if len(names) < 2:
            raise ValueError(f"--conditional: dataset {ds.name!r} has a single class "
                             f"({names[0]!r}); a conditional run needs two or more")
        return list(names)

    def _conditional_models(self, gen: nn.Module, critic: nn.Module
                            ) -> Tuple[nn.Module, nn.Module]:
        """G(z, y) from a generator built for [z, embedding(y)]; a projection critic (a
        concatenating one for the packed critic, built for the one-hot columns too)."""
        cfg, n = self.config, len(self.class_names)
        gen = ConditionalGenerator(gen, n, cfg.latent_dim)
        if self.model_kind == "pac":
            return gen, ConcatPacCritic(critic, n)
        with torch.no_grad():
            probe = torch.zeros(1, *self.dataset.shape)
            was = critic.training
            critic.eval()
            dim = critic.features(probe).shape[1]
            critic.train(was)
        return gen, ProjectionCritic(critic, n, dim, spectral_norm=cfg.method == "sn")

    def _sample_labels(self, n: int, labels: Any, g: torch.Generator | None) -> Tensor | None:
        """The class indices of n samples on the run's device (see generate_samples)."""
        names = self.class_names
        if names is None:
            if labels is not None:
                raise ValueError("labels: this run is not conditional (--conditional); its "
                                 "generator takes no class")
            return None
        if labels is None:
            if g is None:
                g = torch.Generator().manual_seed(int(torch.randint(2 ** 62, ()).item()))
            return self.dataset.sample_labels(n, g).to(self.device)

        def index(v) -> int:
            if isinstance(v, str):
                if v not in names:
                    raise ValueError(f"labels: no class named {v!r} (classes: "
                                     f"{', '.join(names)})")
                return names.index(v)
            k = int(v)
            if not 0 <= k < len(names):
                raise ValueError(f"labels: class index {k} is outside 0..{len(names) - 1}")
            return k

        if isinstance(labels, (str, int, np.integer)):
            ys = [index(labels)] * n
        else:
            values = labels.tolist() if isinstance(labels, (Tensor, np.ndarray)) else list(labels)
            if len(values) != n:
                raise ValueError(f"labels: {len(values)} labels for {n} samples")
            ys = [index(v) for v in values]
        return torch.tensor(ys, dtype=torch.int64, device=self.device)


    def class_grid(self, per_class: int = 8, max_classes: int = 32
                   ) -> Tuple[np.ndarray, List[str]]:
        """A conditional run's picture: one row of `per_class` samples per class (the first
        `max_classes`), each row from the same fixed noise; (samples, row names)."""
        names = self.class_names[:max_classes]
        noise = self.fixed_noise[:per_class].repeat(len(names), 1)
        labels = torch.arange(len(names)).repeat_interleave(per_class)
        return self.generate_samples(noise=noise, labels=labels).numpy(), list(names)
