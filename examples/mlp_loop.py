"""A hand-written WGAN-GP loop (MLP generator and critic, a `compute_gradient_penalty(critic, real,
fake, device)` function whose caller multiplies by lambda) with the fused penalty.

The change to such a script: its `compute_gradient_penalty` definition is replaced by the import
below; the loop calls it exactly as before. The data are synthetic 8x8 "bar" images so the
script needs no download and runs in seconds on a CPU.

    python examples/mlp_loop.py
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
import torch.nn as nn
from torch import Tensor

from wgangp_fast.integrations.functions import compute_gradient_penalty


@dataclass
class WGANGPConfig:
    latent_dim: int = 16
    hidden_dim: int = 32
    image_channels: int = 1
    image_size: int = 8
    lr: float = 1e-4
    beta1: float = 0.0
    beta2: float = 0.9
    gp_lambda: float = 10.0
    n_critic: int = 5
    batch_size: int = 64
    iterations: int = 40
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    seed: int = 42

    @property
    def image_dim(self) -> int:
        return self.image_channels * self.image_size * self.image_size


class Generator(nn.Module):
    def __init__(self, c: WGANGPConfig) -> None:
        super().__init__()
        self.c = c
        self.net = nn.Sequential(
            nn.Linear(c.latent_dim, c.hidden_dim), nn.BatchNorm1d(c.hidden_dim), nn.ReLU(True),
            nn.Linear(c.hidden_dim, c.hidden_dim * 2), nn.BatchNorm1d(c.hidden_dim * 2),
            nn.ReLU(True), nn.Linear(c.hidden_dim * 2, c.image_dim), nn.Tanh())

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(-1, self.c.image_channels, self.c.image_size, self.c.image_size)


class Critic(nn.Module):
    def __init__(self, c: WGANGPConfig) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(c.image_dim, c.hidden_dim * 2), nn.LeakyReLU(0.2, True),
            nn.Linear(c.hidden_dim * 2, c.hidden_dim), nn.LeakyReLU(0.2, True),
            nn.Linear(c.hidden_dim, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.view(x.size(0), -1))


def bar_images(n: int, size: int, device) -> Tensor:
    """One bright horizontal or vertical bar per image, in [-1, 1]."""
    img = -torch.ones(n, 1, size, size, device=device)
    pos = torch.randint(0, size, (n,), device=device)
    vertical = torch.rand(n, device=device) < 0.5
    rows = torch.arange(n, device=device)
    img[rows[vertical], 0, :, pos[vertical]] = 1.0
    img[rows[~vertical], 0, pos[~vertical], :] = 1.0
    return img


class WGANGPTrainer:
    def __init__(self, config: WGANGPConfig) -> None:
        self.config = config
        self.device = torch.device(config.device)
        torch.manual_seed(config.seed)
        self.generator = Generator(config).to(self.device)
        self.critic = Critic(config).to(self.device)
        betas = (config.beta1, config.beta2)
        self.optimizer_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr, betas=betas)
        self.optimizer_c = torch.optim.Adam(self.critic.parameters(), lr=config.lr, betas=betas)

    def _train_critic(self, real: Tensor) -> Tuple[float, float, float]:
        self.optimizer_c.zero_grad()
        z = torch.randn(real.size(0), self.config.latent_dim, device=self.device)
        fake = self.generator(z).detach()
        wasserstein = self.critic(real).mean() - self.critic(fake).mean()
        gp = compute_gradient_penalty(self.critic, real, fake, self.device)
        loss_c = -wasserstein + self.config.gp_lambda * gp
        loss_c.backward()
        self.optimizer_c.step()
        return loss_c.item(), wasserstein.item(), gp.item()

    def _train_generator(self, batch_size: int) -> float:
        self.optimizer_g.zero_grad()
        z = torch.randn(batch_size, self.config.latent_dim, device=self.device)
        loss_g = -self.critic(self.generator(z)).mean()
        loss_g.backward()
        self.optimizer_g.step()
        return loss_g.item()


def main() -> None:
    config = WGANGPConfig()
    trainer = WGANGPTrainer(config)
    for it in range(config.iterations):
        real = bar_images(config.batch_size, config.image_size, trainer.device)
        for _ in range(config.n_critic):
            loss_c, w_dist, gp = trainer._train_critic(real)
        loss_g = trainer._train_generator(real.size(0))
        if it % 10 == 0 or it == config.iterations - 1:
            print(f"iter {it:3d}  W {w_dist:+.4f}  GP {gp:.4f}  loss_C {loss_c:+.4f}  "
                  f"loss_G {loss_g:+.4f}")


if __name__ == "__main__":
    main()
