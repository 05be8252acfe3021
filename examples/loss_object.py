"""A training script with a loss object (WassersteinGANLoss, LayerNorm conv critic) with the fused
penalty.

The change to such a script: its `gradient_penalty` and `WassersteinGANLoss` definitions are
replaced by the import below; `train_wgan_gp` is its loop, unchanged. The data are synthetic 32x32
blob images, so nothing is downloaded and it runs in seconds on a CPU.

    python examples/loss_object.py
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from wgangp_fast.integrations.functions import WassersteinGANLoss


class WGANCritic(nn.Module):
    def __init__(self, image_channels=1, feature_maps=8):
        super().__init__()
        fm = feature_maps
        self.model = nn.Sequential(
            nn.Conv2d(image_channels, fm, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(fm, fm * 2, 4, 2, 1), nn.LayerNorm([fm * 2, 8, 8]),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(fm * 2, fm * 4, 4, 2, 1), nn.LayerNorm([fm * 4, 4, 4]),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(fm * 4, 1, 4, 1, 0))

    def forward(self, x):
        return self.model(x).view(-1, 1)


class Generator(nn.Module):
    def __init__(self, latent_dim=32, image_channels=1, feature_maps=8):
        super().__init__()
        fm = feature_maps
        self.model = nn.Sequential(
            nn.Unflatten(1, (latent_dim, 1, 1)),
            nn.ConvTranspose2d(latent_dim, fm * 4, 4, 1, 0), nn.BatchNorm2d(fm * 4), nn.ReLU(True),
            nn.ConvTranspose2d(fm * 4, fm * 2, 4, 2, 1), nn.BatchNorm2d(fm * 2), nn.ReLU(True),
            nn.ConvTranspose2d(fm * 2, fm, 4, 2, 1), nn.BatchNorm2d(fm), nn.ReLU(True),
            nn.ConvTranspose2d(fm, image_channels, 4, 2, 1), nn.Tanh())

    def forward(self, z):
        return self.model(z)


def blob_images(n: int, size: int = 32) -> torch.Tensor:
    """One Gaussian blob per image at a random place, scaled to [-1, 1]."""
    grid = torch.arange(size, dtype=torch.float32)
    centre = torch.rand(n, 2) * (size - 8) + 4
    dy = (grid.view(1, -1, 1) - centre[:, 0].view(-1, 1, 1)) ** 2
    dx = (grid.view(1, 1, -1) - centre[:, 1].view(-1, 1, 1)) ** 2
    return (2 * torch.exp(-(dx + dy) / 18.0) - 1).unsqueeze(1)


def train_wgan_gp(G, D, dataloader, config, device):
    loss_fn = WassersteinGANLoss(lambda_gp=config["lambda_gp"])
    g_optimizer = torch.optim.Adam(G.parameters(), lr=config["lr"], betas=(0.0, 0.9))
    d_optimizer = torch.optim.Adam(D.parameters(), lr=config["lr"], betas=(0.0, 0.9))
    n_critic = config.get("n_critic", 5)

    for epoch in range(config["n_epochs"]):
        for i, (real_data, _) in enumerate(dataloader):
            real_data = real_data.to(device)
            batch_size = real_data.size(0)

            for _ in range(n_critic):
                d_optimizer.zero_grad()
                z = torch.randn(batch_size, config["latent_dim"], device=device)
                fake_data = G(z).detach()
                d_loss, d_info = loss_fn.critic_loss(D, real_data, fake_data, device)
                d_loss.backward()
                d_optimizer.step()

            g_optimizer.zero_grad()
            z = torch.randn(batch_size, config["latent_dim"], device=device)
            g_loss = loss_fn.generator_loss(D(G(z)))
            g_loss.backward()
            g_optimizer.step()

            if i % 2 == 0:
                print(f"Epoch [{epoch}] Batch [{i}] W-dist: {d_info['wasserstein']:.4f} "
                      f"GP: {d_info['gp']:.4f} G_loss: {g_loss.item():.4f}")


def main() -> None:
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    config = {"lambda_gp": 10, "lr": 1e-4, "n_critic": 3, "n_epochs": 1, "latent_dim": 32}
    images = blob_images(128)
    loader = DataLoader(TensorDataset(images, torch.zeros(len(images))), batch_size=32,
                        shuffle=True, drop_last=True)
    G = Generator(config["latent_dim"]).to(device)
    D = WGANCritic().to(device)
    train_wgan_gp(G, D, loader, config, device)


if __name__ == "__main__":
    main()
