"""A whole WGAN-GP iteration in one call: wgangp_fast.TrainStep over a CriticStep and a
GeneratorStep, on a toy 2-D mixture (nothing to download; seconds on a CPU).

    python examples/whole_step.py                  # mode "auto": eager on the CPU, graph on CUDA
    python examples/whole_step.py --mode compile   # torch.compile of the torch.func step

On a GPU, mode "auto" captures each iteration (5 critic steps, a generator step, the noise and the
interpolation weights drawn inside) once in a CUDA graph and replays it; the critic step alone is
`CriticStep(critic, optimizer)(real, fake)`.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn

import wgangp_fast


def ring(n: int, device) -> torch.Tensor:
    """8 Gaussians of std 0.05 on the unit circle."""
    k = torch.randint(0, 8, (n,), device=device).float()
    centres = torch.stack([torch.cos(k * math.pi / 4), torch.sin(k * math.pi / 4)], 1)
    return centres + 0.05 * torch.randn(n, 2, device=device)


def mlp(d_in: int, d_out: int, act: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, 128), act, nn.Linear(128, 128), act,
                         nn.Linear(128, d_out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="auto", choices=wgangp_fast.steps.MODES)
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    generator = mlp(2, 2, nn.ReLU()).to(device)
    critic = mlp(2, 1, nn.LeakyReLU(0.2)).to(device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=1e-3, betas=(0.5, 0.9))
    opt_c = torch.optim.Adam(critic.parameters(), lr=1e-3, betas=(0.5, 0.9))
    train = wgangp_fast.TrainStep(
        wgangp_fast.CriticStep(critic, opt_c, lambda_gp=0.1, mode=args.mode),
        wgangp_fast.GeneratorStep(generator, critic, opt_g, mode=args.mode),
        latent_dim=2, n_critic=5)
    start = time.perf_counter()
    for i in range(1, args.iterations + 1):
        stats = train(torch.stack([ring(256, device) for _ in range(5)]))
        if i % 100 == 0:
            print(f"iteration {i}: W {stats.critic.wasserstein.item():.4f}, "
                  f"penalty {stats.critic.penalty.item():.4f}, generator loss "
                  f"{stats.loss_g.item():.4f} (mode {train.mode})")
    seconds = time.perf_counter() - start
    with torch.no_grad():
        fake = generator(torch.randn(2000, 2, device=device))
    radius = fake.norm(dim=1)
    print(f"{args.iterations} iterations in {seconds:.1f} s; generated points at radius "
          f"{radius.mean().item():.3f} +- {radius.std().item():.3f} (the modes lie at 1)")


if __name__ == "__main__":
    main()
