"""Class-conditional wrappers around the trainer's models (`--conditional`).

- `ConditionalGenerator`: G(z, y) = G0([z, e(y)]): a learned embedding of the label, of the
  latent's size, concatenated with the noise; G0 is any of the unconditional generators built
  for latent_dim * 2 inputs. The same for the MLP, conv, ResNet and tabular generators, which is
  why it is used rather than the conditional BatchNorm of the WGAN-GP paper's AC-GAN runs (that
  one needs BatchNorm layers to modulate, which the toy generators go without).
- `ProjectionCritic`: D(x, y) = psi(phi(x)) + <E(y), phi(x)> (Miyato & Koyama, 2018) on a critic
  with `features` (phi) and `score` (psi). The label enters as an inner product with the
  critic's own features instead of as extra input channels or columns: the input stays the
  image, so the gradient penalty, taken with respect to the image, measures the same thing as
  in an unconditional run, and Miyato & Koyama found projection ahead of input concatenation
  on CIFAR-10 and ImageNet.
- `ConcatPacCritic`: the one-hot label concatenated to each row before packing (CTGAN's
  conditional vector): a packed critic judges `pac` rows at once, which a per-sample projection
  cannot express.

Every critic here is called critic(x, labels) and returns [N, 1] ([N / pac, 1] packed).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .models import _positive_int

__all__ = ["ConcatPacCritic", "ConditionalGenerator", "ProjectionCritic"]


def _joined(a: Tensor, b: Tensor) -> Tensor:
    return torch.cat([a, b.to(a.dtype)], dim=1)


def _labels(y: Tensor, n: int, n_classes: int) -> Tensor:
    if y.dtype.is_floating_point or y.dim() != 1 or y.shape[0] != n:
        raise ValueError(f"labels must be {n} integer class indices (shape [{n}]), got dtype "
                         f"{y.dtype} and shape {list(y.shape)}")
    return y


class ConditionalGenerator(nn.Module):
    """G(z, y) = base(cat[z, embedding(y)]); `base` takes latent_dim + embed_dim inputs."""

    def __init__(self, base: nn.Module, n_classes: int, latent_dim: int,
                 embed_dim: int | None = None) -> None:
        super().__init__()
        self.n_classes = _positive_int("n_classes", n_classes)
        self.latent_dim = _positive_int("latent_dim", latent_dim)
        self.embed_dim = _positive_int("embed_dim", embed_dim or latent_dim)
        self.embedding = nn.Embedding(self.n_classes, self.embed_dim)
        self.base = base

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        y = _labels(y, z.shape[0], self.n_classes)
        return self.base(_joined(z.reshape(z.shape[0], -1), self.embedding(y)))


class ProjectionCritic(nn.Module):
    """D(x, y) = base.score(phi) + <embedding(y), phi>, phi = base.features(x)."""

    def __init__(self, base: nn.Module, n_classes: int, feature_dim: int,
                 spectral_norm: bool = False) -> None:
        super().__init__()
        for name in ("features", "score"):
            if not callable(getattr(base, name, None)):
                raise TypeError(f"a projection critic needs a base critic with a {name}() "
                                f"method, got {type(base).__name__}")
        self.n_classes = _positive_int("n_classes", n_classes)
        self.base = base
        self.embedding = nn.Embedding(self.n_classes, _positive_int("feature_dim", feature_dim))
        nn.init.normal_(self.embedding.weight, 0.0, 0.02)
        if spectral_norm:
            self.embedding = nn.utils.parametrizations.spectral_norm(self.embedding)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        y = _labels(y, x.shape[0], self.n_classes)
        phi = self.base.features(x)
        return self.base.score(phi) + (self.embedding(y).to(phi.dtype) * phi).sum(1, keepdim=True)


class ConcatPacCritic(nn.Module):
    """base(cat[x, one_hot(y)]) for a packed critic built for input_dim + n_classes columns."""

    def __init__(self, base: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.n_classes = _positive_int("n_classes", n_classes)
        self.base = base

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        y = _labels(y, x.shape[0], self.n_classes)
        flat = x.reshape(x.shape[0], -1)
        return self.base(_joined(flat, F.one_hot(y, self.n_classes)))
