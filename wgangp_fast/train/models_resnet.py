"""The ResNet generator and critic of the WGAN-GP paper's CIFAR-10 experiments (Gulrajani et al.,
2017, appendix), written from its description and generalised to any power-of-two side >= 8.

Generator: z -> Linear -> [width, 4, 4] -> one up-sampling residual block per doubling up to the
image side -> BatchNorm, ReLU, 3x3 convolution to the image channels, tanh. An up block's residual
branch is BN, ReLU, nearest-neighbour 2x up-sampling, 3x3 conv, BN, ReLU, 3x3 conv; its shortcut
is the up-sampling and a 1x1 conv.

Critic: a first down-sampling block (3x3 conv, ReLU, 3x3 conv, 2x2 mean pool; shortcut: mean
pool then 1x1 conv), more down-sampling blocks (ReLU, 3x3 conv, ReLU, 3x3 conv, mean pool;
shortcut: 1x1 conv, mean pool) until the maps are 8x8 (4x4 for an 8x8 image), two blocks at that
size with identity shortcuts, then ReLU, the spatial mean and a Linear to the score. At 32x32
this is the paper's critic: 32 -> 16 -> 8, two more blocks at 8x8, 128 channels throughout.
No BatchNorm in the critic (it couples the samples of a batch, which breaks the per-sample
gradient penalty); `norm="layer"` puts a per-sample LayerNorm over [C, H, W] (a GroupNorm with
one group, with a scale and offset per channel) before each ReLU of its residual branches.

Both use He's init for the convolutions followed by a ReLU and Glorot's elsewhere (the paper's
code), whatever the trainer's --init: the residual sums keep the scale without a rescaling.
`features(x)` and `score(features)` split the critic before its last Linear, for the projection
of a conditional critic (wgangp_fast.train.models_conditional).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .models import _image_stages, _positive_int

__all__ = ["CRITIC_NORMS", "ResNetCritic", "ResNetGenerator"]

CRITIC_NORMS = ("none", "layer")


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            if m.kernel_size == (3, 3):
                nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
            else:
                nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


class _UpBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(width)
        self.conv1 = nn.Conv2d(width, width, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1)
        self.shortcut = nn.Conv2d(width, width, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = F.interpolate(F.relu(self.bn1(x)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h))))
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class ResNetGenerator(nn.Module):
    """z [N, latent_dim] -> [N, channels, S, S] in [-1, 1]; S a power of two >= 8."""

    def __init__(self, latent_dim: int = 128, channels: int = 3, image_size: int = 32,
                 width: int = 128) -> None:
        super().__init__()
        self.latent_dim = _positive_int("latent_dim", latent_dim)
        self.channels = _positive_int("channels", channels)
        self.width = _positive_int("width", width)
        blocks = _image_stages(image_size)
        self.image_size = int(image_size)
        self.fc = nn.Linear(self.latent_dim, 16 * self.width)
        self.blocks = nn.Sequential(*(_UpBlock(self.width) for _ in range(blocks)))
        self.bn = nn.BatchNorm2d(self.width)
        self.out = nn.Conv2d(self.width, self.channels, 3, 1, 1)
        _init(self)

    def forward(self, z: Tensor) -> Tensor:
        h = self.fc(z.reshape(z.shape[0], -1)).view(z.shape[0], self.width, 4, 4)
        h = self.blocks(h)
        return torch.tanh(self.out(F.relu(self.bn(h))))


def _norm(kind: str, width: int) -> nn.Module:
    return nn.GroupNorm(1, width) if kind == "layer" else nn.Identity()


class _DownBlock(nn.Module):
    """A critic block; `first`: the paper's optimised first block (no ReLU on the image, the
    shortcut pools before its 1x1 conv); `down`: a 2x2 mean pool at the end of both paths."""

    def __init__(self, c_in: int, width: int, *, down: bool, first: bool, norm: str) -> None:
        super().__init__()
        self.down, self.first = down, first
        self.norm1 = _norm(norm, c_in) if not first else nn.Identity()
        self.conv1 = nn.Conv2d(c_in, width, 3, 1, 1)
        self.norm2 = _norm(norm, width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1)
        self.shortcut = nn.Conv2d(c_in, width, 1) if (down or c_in != width) else None

    def forward(self, x: Tensor) -> Tensor:
        # not in place: x also feeds the shortcut
        h = x if self.first else F.relu(self.norm1(x))
        h = self.conv2(F.relu(self.norm2(self.conv1(h))))
        if self.down:
            h = F.avg_pool2d(h, 2)
        s = x
        if self.shortcut is not None:
            if self.first:
                s = self.shortcut(F.avg_pool2d(x, 2))
            else:
                s = self.shortcut(x)
                if self.down:
                    s = F.avg_pool2d(s, 2)
        elif self.down:
            s = F.avg_pool2d(s, 2)
        return h + s


class ResNetCritic(nn.Module):
    """x [N, channels, S, S] -> [N, 1]; no BatchNorm (norm "none" or "layer")."""

    def __init__(self, channels: int = 3, image_size: int = 32, width: int = 128,
                 norm: str = "none") -> None:
        super().__init__()
        self.channels = _positive_int("channels", channels)
        self.width = _positive_int("width", width)
        if norm not in CRITIC_NORMS:
            raise ValueError(f"norm must be one of {', '.join(CRITIC_NORMS)}, got {norm!r}")
        _image_stages(image_size)
        self.image_size = int(image_size)
        downs = max(1, int(math.log2(self.image_size)) - 3)  # to 8x8; one for 8x8 images
        blocks = [_DownBlock(self.channels, self.width, down=True, first=True, norm=norm)]
        blocks += [_DownBlock(self.width, self.width, down=True, first=False, norm=norm)
                   for _ in range(downs - 1)]
        blocks += [_DownBlock(self.width, self.width, down=False, first=False, norm=norm)
                   for _ in range(2)]
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(self.width, 1)
        _init(self)

    def features(self, x: Tensor) -> Tensor:
        """[N, width]: the spatial mean of the last block's rectified maps."""
        return F.relu(self.blocks(x)).mean(dim=(2, 3))

    def score(self, features: Tensor) -> Tensor:
        return self.fc(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.score(self.features(x))
