"""The seed codes' penalty functions and loss class, transcribed (shared by the tests that check
the drop-ins and the references against them)."""

from __future__ import annotations

import torch


def seed002_compute_gradient_penalty(critic, real, fake, device):
    """Seed 002's function, transcribed."""
    batch_size = real.size(0)
    epsilon = torch.rand(batch_size, 1, 1, 1, device=device)
    interpolated = (epsilon * real + (1 - epsilon) * fake).requires_grad_(True)
    d_interpolated = critic(interpolated)
    gradients = torch.autograd.grad(outputs=d_interpolated, inputs=interpolated,
                                    grad_outputs=torch.ones_like(d_interpolated),
                                    create_graph=True, retain_graph=True)[0]
    gradients = gradients.view(batch_size, -1)
    return ((gradients.norm(2, dim=1) - 1) ** 2).mean()


def seed003_gradient_penalty(D, real_data, fake_data, device, lambda_gp=10):
    """Seed 003's function, transcribed."""
    batch_size = real_data.size(0)
    alpha = torch.rand(batch_size, 1, 1, 1, device=device)
    alpha = alpha.expand_as(real_data)
    interpolated = alpha * real_data + (1 - alpha) * fake_data
    interpolated.requires_grad_(True)
    d_interpolated = D(interpolated)
    gradients = torch.autograd.grad(outputs=d_interpolated, inputs=interpolated,
                                    grad_outputs=torch.ones_like(d_interpolated),
                                    create_graph=True, retain_graph=True)[0]
    gradients = gradients.view(batch_size, -1)
    return lambda_gp * ((gradients.norm(2, dim=1) - 1) ** 2).mean()


class Seed003Loss:
    """Seed 003's WassersteinGANLoss, transcribed."""

    def __init__(self, lambda_gp=10):
        self.lambda_gp = lambda_gp

    def critic_loss(self, D, real_data, fake_data, device):
        d_real = D(real_data)
        d_fake = D(fake_data)
        wasserstein_distance = d_real.mean() - d_fake.mean()
        gp = seed003_gradient_penalty(D, real_data, fake_data, device, self.lambda_gp)
        loss = -wasserstein_distance + gp
        return loss, {"wasserstein": wasserstein_distance.item(), "gp": gp.item(),
                      "d_real": d_real.mean().item(), "d_fake": d_fake.mean().item()}

    def generator_loss(self, d_fake):
        return -d_fake.mean()
