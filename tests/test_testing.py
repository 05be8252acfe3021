"""The plain-autograd references equal a literal transcription of the seed formulas (float64)."""

from __future__ import annotations

import torch

from wgangp_fast.testing import (
    autograd_gradient_norm_penalty,
    ctgan_gradient_penalty,
    per_sample_gradient_penalty,
)

from .seed_code import seed003_gradient_penalty


class Packed(torch.nn.Module):
    """A CTGAN-style packed critic: pac samples are seen as one input row."""

    def __init__(self, d, pac):
        super().__init__()
        self.pac, self.d = pac, d
        self.net = torch.nn.Sequential(torch.nn.Linear(d * pac, 16), torch.nn.LeakyReLU(0.2),
                                       torch.nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x.view(-1, self.pac * self.d))


def _seed000(critic, real_data, fake_data, device, pac):
    # Seed 000, calc_gradient_penalty, transcribed as written.
    batch_size = real_data.size(0) // pac
    alpha = torch.rand(batch_size, 1, device=device)
    alpha = alpha.expand(batch_size, real_data.size(1))
    if pac > 1:
        alpha = alpha.unsqueeze(1).expand(batch_size, pac, real_data.size(1))
        alpha = alpha.contiguous().view(-1, real_data.size(1))
    interpolates = alpha * real_data + (1 - alpha) * fake_data
    interpolates.requires_grad_(True)
    disc_interpolates = critic(interpolates)
    gradients = torch.autograd.grad(outputs=disc_interpolates, inputs=interpolates,
                                    grad_outputs=torch.ones_like(disc_interpolates),
                                    create_graph=True, retain_graph=True)[0]
    gradient_norm = gradients.view(-1, pac * real_data.size(1)).norm(2, dim=1)
    return ((gradient_norm - 1) ** 2).mean()


def test_ctgan_reference_is_seed_000_times_lambda():
    torch.manual_seed(0)
    for pac in (1, 2, 10):
        critic = Packed(5, pac).double()
        real, fake = torch.randn(20, 5, dtype=torch.float64), torch.randn(20, 5, dtype=torch.float64)
        torch.manual_seed(1)
        ours = ctgan_gradient_penalty(critic, real, fake, "cpu", pac=pac, lambda_=7.0)
        torch.manual_seed(1)
        seed = _seed000(critic, real, fake, "cpu", pac) * 7.0
        torch.testing.assert_close(ours, seed, rtol=0, atol=0)


def test_per_sample_reference_is_seed_003_for_images_and_any_rank():
    torch.manual_seed(0)
    critic = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 3 * 4, 1)).double()
    real = torch.randn(6, 2, 3, 4, dtype=torch.float64)
    fake = torch.randn(6, 2, 3, 4, dtype=torch.float64)
    torch.manual_seed(2)
    ours = per_sample_gradient_penalty(critic, real, fake, lambda_gp=10.0)
    torch.manual_seed(2)
    seed = seed003_gradient_penalty(critic, real, fake, "cpu")
    torch.testing.assert_close(ours, seed, rtol=0, atol=0)
    # Rank 2 is seed 000 with pac = 1.
    flat = Packed(5, 1).double()
    r2, f2 = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    torch.manual_seed(3)
    ours = per_sample_gradient_penalty(flat, r2, f2, lambda_gp=1.0)
    torch.manual_seed(3)
    torch.testing.assert_close(ours, _seed000(flat, r2, f2, "cpu", 1), rtol=0, atol=0)


def test_contract_reference_matches_the_seed_formula():
    torch.manual_seed(4)
    g = torch.randn(12, 5, dtype=torch.float64)
    seed = ((g.view(-1, 3 * 5).norm(2, dim=1) - 1) ** 2).mean()
    torch.testing.assert_close(autograd_gradient_norm_penalty(g, pac=3), seed)
    torch.testing.assert_close(autograd_gradient_norm_penalty(g, pac=3, scale=10.0, reduction="sum"),
                               10.0 * ((g.view(-1, 15).norm(2, dim=1) - 1) ** 2).sum())
