"""Synthetic 2-D mixtures, the mode-collapse benchmarks of VEEGAN / PacGAN:
- `ring8`: 8 Gaussians with centres on a circle of radius 2, std 0.02 each.
- `grid25`: 25 Gaussians with centres (-4 + 2i, -4 + 2j), i, j in 0..4, std 0.05 each.
- `swissroll`: the 2-D swiss roll t (cos t, sin t) / 7.5, t ~ U[1.5 pi, 4.5 pi], plus N(0, 0.25/7.5)
  noise per coordinate (the scaling of Gulrajani et al.'s toy experiments).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .base import Dataset

__all__ = ["MixtureDataset", "SwissRollDataset", "grid25", "ring8"]


class MixtureDataset(Dataset):
    """Isotropic Gaussian mixture with equal weights; an infinite stream of samples."""

    kind = "points"

    def __init__(self, name: str, centers: np.ndarray, std: float) -> None:
        self.name = name
        self.centers = np.asarray(centers, dtype=np.float64)
        self.std = float(std)
        self.shape = (self.centers.shape[1],)
        self._centers_t = torch.as_tensor(self.centers, dtype=torch.float32)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        idx = torch.randint(len(self.centers), (n,), generator=generator)
        noise = torch.randn(n, self.shape[0], generator=generator)
        return self._centers_t[idx] + self.std * noise


def ring8(radius: float = 2.0, std: float = 0.02) -> MixtureDataset:
    angles = 2 * np.pi * np.arange(8) / 8
    return MixtureDataset("ring8", radius * np.stack([np.cos(angles), np.sin(angles)], 1), std)


def grid25(spacing: float = 2.0, std: float = 0.05) -> MixtureDataset:
    ticks = spacing * (np.arange(5) - 2)
    xx, yy = np.meshgrid(ticks, ticks, indexing="ij")
    return MixtureDataset("grid25", np.stack([xx.ravel(), yy.ravel()], 1), std)


class SwissRollDataset(Dataset):
    name = "swissroll"
    kind = "points"
    shape = (2,)

    def __init__(self, noise: float = 0.25, scale: float = 7.5) -> None:
        self.noise = float(noise)
        self.scale = float(scale)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator))
        pts = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1)
        pts = pts + self.noise * torch.randn(n, 2, generator=generator)
        return pts / self.scale


