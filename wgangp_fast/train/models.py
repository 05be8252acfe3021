"""Generators and critics for the trainer and the benchmarks.

- `MLPGenerator` / `MLPCritic`: the fully connected pair of the usual WGAN-GP MNIST scripts (BatchNorm in
  the generator
  only: BatchNorm in a critic couples the samples of a batch and breaks the per-sample meaning of
  the gradient penalty).
- `ConvGenerator` / `ConvCritic`: a DCGAN-style pair; the critic as WGAN-GP ports write it (stride-2 4x4
  convolutions, LayerNorm instead of BatchNorm, no sigmoid).
- `PacCritic` / `TabularGenerator`: CTGAN's packed discriminator and residual generator, for
  tabular data (PacGAN: the critic judges `pac` samples at once).

Every critic returns [N, 1] (PacCritic: [N / pac, 1]) and supports double backward, the in-place
LeakyReLU included (its backward is computed from its output, which stays available).
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "ConvCritic",
    "ConvGenerator",
    "MLPCritic",
    "MLPGenerator",
    "PacCritic",
    "TabularGenerator",
    "init_he",
    "init_normal",
]


def _is_int(value) -> bool:
    """An int or any integral number (numpy's included), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _positive_int(name: str, value) -> int:
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _shape(name: str, shape) -> Tuple[int, ...]:
    if _is_int(shape):
        shape = (shape,)
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"{name} must be an int or a sequence of ints, got {shape!r}") from None
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"{name} must be a non-empty shape of positive ints, got {shape}")
    return shape


def _hidden(name: str, hidden) -> Tuple[int, ...]:
    hidden = tuple(hidden)
    for h in hidden:
        _positive_int(f"each entry of {name}", h)
    return hidden


def _image_stages(image_size) -> int:
    """Stride-2 stages from image_size down to 4x4 (image_size a power of two, at least 8)."""
    if not _is_int(image_size) or image_size < 8 or image_size & (image_size - 1):
        raise ValueError(f"image_size must be a power of two >= 8 (8, 16, 32, 64, ...), "
                         f"got {image_size!r}")
    return int(math.log2(int(image_size))) - 2


def init_normal(module: nn.Module, std: float = 0.02) -> None:
    """N(0, std) weights and zero biases for Linear/Conv layers (DCGAN's init); norms: (1, 0)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            if hasattr(m, "parametrizations"):
                # spectral-norm layers were initialised before wrapping (see _maybe_sn)
                continue
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


_WEIGHTED = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)
_SKIPPED = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.Dropout)


def init_he(module: nn.Module) -> None:
    """He et al.'s scale-keeping init: weights N(0, gain^2 / fan_in), zero biases, the gain that
    of the activation after the layer (ReLU sqrt(2), LeakyReLU(s) sqrt(2 / (1 + s^2)), 1 for a
    layer followed by nothing or by another weighted layer). Without normalisation layers,
    init_normal's N(0, 0.02) shrinks the signal at every layer (the toy generator's samples
    start within 1e-4 of the origin), and only a large learning rate escapes that start.
    The layers' order is their registration order, the forward order of the models here.
    Spectral-norm layers keep their init (they are rescaled anyway)."""
    leaves = [m for m in module.modules() if not list(m.children())]
    for i, m in enumerate(leaves):
        if not isinstance(m, _WEIGHTED) or hasattr(m, "parametrizations"):
            continue
        gain = 1.0
        for nxt in leaves[i + 1:]:
            if isinstance(nxt, _SKIPPED):
                continue
            if isinstance(nxt, nn.ReLU):
                gain = nn.init.calculate_gain("relu")
            elif isinstance(nxt, nn.LeakyReLU):
                gain = nn.init.calculate_gain("leaky_relu", nxt.negative_slope)
            break
        nn.init.kaiming_normal_(m.weight, a=0.0, mode="fan_in", nonlinearity="linear")
        with torch.no_grad():
            m.weight.mul_(gain)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def _maybe_sn(layer: nn.Module, on: bool, std: float = 0.02) -> nn.Module:
    """Spectral normalisation (Miyato et al.) of a layer, initialised first so that the power
    iteration run at registration estimates the norm of the weights actually used."""
    if not on:
        return layer
    nn.init.normal_(layer.weight, 0.0, std)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return nn.utils.parametrizations.spectral_norm(layer)


class MLPGenerator(nn.Module):
    """z [N, latent_dim] -> [N, *out_shape]: Linear/BatchNorm1d/ReLU to h, 2h, 4h, then Linear.

    output_activation: "tanh" for data scaled to [-1, 1] (images), None (or "none") for unbounded
    data (2-D toy sets, standardised tables). batch_norm=False drops the BatchNorm layers: in
    training mode they make each output depend on the rest of its batch, a jitter of about
    1/sqrt(batch) that blurs the tight clusters of the 2-D mixtures.
    """

    def __init__(self, latent_dim: int = 100, hidden_dim: int = 256,
                 out_shape: Sequence[int] = (1, 28, 28),
                 output_activation: str | None = "tanh", batch_norm: bool = True) -> None:
        super().__init__()
        self.latent_dim = _positive_int("latent_dim", latent_dim)
        h = _positive_int("hidden_dim", hidden_dim)
        self.out_shape = _shape("out_shape", out_shape)
        if output_activation not in ("tanh", None, "none"):
            raise ValueError(f"output_activation must be 'tanh' or None, got {output_activation!r}")
        out_dim = math.prod(self.out_shape)
        layers = []
        width_in = self.latent_dim
        for width in (h, 2 * h, 4 * h):
            layers.append(nn.Linear(width_in, width))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.ReLU(inplace=True))
            width_in = width
        layers.append(nn.Linear(width_in, out_dim))
        if output_activation == "tanh":
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)
        init_normal(self)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(z.shape[0], *self.out_shape)


class MLPCritic(nn.Module):
    """x [N, *in_shape] -> [N, 1]: flatten, Linear 4h, 2h, h with LeakyReLU(0.2), Linear 1."""

    def __init__(self, in_shape: Sequence[int] = (1, 28, 28), hidden_dim: int = 256,
                 spectral_norm: bool = False) -> None:
        super().__init__()
        self.in_shape = _shape("in_shape", in_shape)
        h = _positive_int("hidden_dim", hidden_dim)
        width_in = math.prod(self.in_shape)
        layers = []
        for width in (4 * h, 2 * h, h):
            layers += [_maybe_sn(nn.Linear(width_in, width), spectral_norm),
                       nn.LeakyReLU(0.2, inplace=True)]
            width_in = width
        layers.append(_maybe_sn(nn.Linear(width_in, 1), spectral_norm))
        self.net = nn.Sequential(*layers)
        init_normal(self)

    def features(self, x: Tensor) -> Tensor:
        """[N, hidden_dim]: the activations before the last Linear (a projection critic's)."""
        return self.net[:-1](x.reshape(x.shape[0], -1))

    def score(self, features: Tensor) -> Tensor:
        return self.net[-1](features)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.reshape(x.shape[0], -1))


class ConvCritic(nn.Module):
    """x [N, channels, S, S] -> [N, 1], S a power of two >= 8.

    Conv 4/2/1 stages double the feature maps and halve the size down to 4x4 (32: three stages,
    64: four); every stage but the first has LayerNorm over [C, H, W]; a 4x4 valid convolution
    gives the score. No sigmoid: the output is an unbounded Wasserstein potential.
    """

    def __init__(self, channels: int = 1, image_size: int = 32, feature_maps: int = 64,
                 spectral_norm: bool = False) -> None:
        super().__init__()
        self.channels = _positive_int("channels", channels)
        f = _positive_int("feature_maps", feature_maps)
        stages = _image_stages(image_size)
        image_size = int(image_size)
        self.image_size = image_size
        layers = []
        c_in, size = self.channels, image_size
        for i in range(stages):
            c_out = f * 2 ** i
            size //= 2
            layers.append(_maybe_sn(nn.Conv2d(c_in, c_out, 4, 2, 1), spectral_norm))
            if i > 0 and not spectral_norm:
                layers.append(nn.LayerNorm([c_out, size, size]))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            c_in = c_out
        layers.append(_maybe_sn(nn.Conv2d(c_in, 1, 4, 1, 0), spectral_norm))
        self.net = nn.Sequential(*layers)
        init_normal(self)

    def features(self, x: Tensor) -> Tensor:
        """[N, C * 16]: the last 4x4 stage's maps, flattened (the final 4x4 convolution is a
        Linear on them)."""
        return self.net[:-1](x).flatten(1)

    def score(self, features: Tensor) -> Tensor:
        head = self.net[-1]
        c = features.shape[1] // 16
        return head(features.view(features.shape[0], c, 4, 4)).view(-1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).view(-1, 1)


class ConvGenerator(nn.Module):
    """z [N, latent_dim] -> [N, channels, S, S] in [-1, 1] (DCGAN): ConvTranspose from 4x4 up."""

    def __init__(self, latent_dim: int = 100, channels: int = 1, image_size: int = 32,
                 feature_maps: int = 64) -> None:
        super().__init__()
        self.latent_dim = _positive_int("latent_dim", latent_dim)
        self.channels = _positive_int("channels", channels)
        f = _positive_int("feature_maps", feature_maps)
        stages = _image_stages(image_size)
        image_size = int(image_size)
        self.image_size = image_size
        c = f * 2 ** (stages - 1)
        layers = [nn.ConvTranspose2d(self.latent_dim, c, 4, 1, 0, bias=False),
                  nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        for _ in range(stages - 1):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(c // 2), nn.ReLU(inplace=True)]
            c //= 2
        layers += [nn.ConvTranspose2d(c, self.channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_normal(self)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.view(z.shape[0], self.latent_dim, 1, 1))


class PacCritic(nn.Module):
    """CTGAN's packed discriminator: x [N, input_dim] -> [N / pac, 1].

    `pac` consecutive rows are judged together (input.view(-1, pac * input_dim)), then
    Linear / LeakyReLU(0.2) / Dropout per hidden width and a final Linear to 1.
    """

    def __init__(self, input_dim: int, pac: int = 10, hidden: Sequence[int] = (256, 256),
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.input_dim = _positive_int("input_dim", input_dim)
        self.pac = _positive_int("pac", pac)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        width_in = self.pac * self.input_dim
        layers = []
        for width in _hidden("hidden", hidden):
            layers += [nn.Linear(width_in, width), nn.LeakyReLU(0.2)]
            if dropout > 0:
                layers.append(nn.Dropout(float(dropout)))
            width_in = width
        layers.append(nn.Linear(width_in, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] % self.pac:
            raise ValueError(f"PacCritic: the batch size ({x.shape[0]}) must be a multiple of "
                             f"pac={self.pac}")
        return self.net(x.reshape(-1, self.pac * self.input_dim))


class _Residual(nn.Module):
    """Linear / BatchNorm1d / ReLU whose output is concatenated to its input (CTGAN)."""

    def __init__(self, width_in: int, width_out: int) -> None:
        super().__init__()
        self.fc = nn.Linear(width_in, width_out)
        self.bn = nn.BatchNorm1d(width_out)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([torch.relu(self.bn(self.fc(x))), x], dim=1)


class TabularGenerator(nn.Module):
    """CTGAN-style residual generator: z [N, latent_dim] -> [N, output_dim].

    Each hidden block concatenates its output to its input, then one Linear maps to output_dim.
    `categorical_spans` (optional list of (start, end) column ranges of one-hot blocks) puts a
    Gumbel-softmax (tau 0.2, as CTGAN) on those columns so fake rows look like real one-hot rows;
    `tanh_columns` (column indices) puts tanh_scale * tanh on those (the in-mode scalars of
    CTGAN's mode-specific normalisation); the other columns stay linear (standardised data).
    """

    def __init__(self, latent_dim: int, output_dim: int, hidden: Sequence[int] = (256, 256),
                 categorical_spans: Sequence[Tuple[int, int]] | None = None,
                 tau: float = 0.2, tanh_columns: Sequence[int] = (),
                 tanh_scale: float = 1.0) -> None:
        super().__init__()
        self.latent_dim = _positive_int("latent_dim", latent_dim)
        self.output_dim = _positive_int("output_dim", output_dim)
        spans = [(int(a), int(b)) for a, b in (categorical_spans or ())]
        for a, b in spans:
            if not 0 <= a < b <= self.output_dim:
                raise ValueError(f"categorical_spans: ({a}, {b}) is not a column range inside "
                                 f"[0, {self.output_dim})")
        self.categorical_spans = spans
        self.tanh_columns = sorted(int(i) for i in tanh_columns)
        inside = [i for a, b in spans for i in range(a, b)]
        for i in self.tanh_columns:
            if not 0 <= i < self.output_dim or i in inside:
                raise ValueError(f"tanh_columns: {i} is not a column inside [0, "
                                 f"{self.output_dim}) outside the categorical spans")
        self.tanh_scale = float(tanh_scale)
        self.tau = float(tau)
        blocks = []
        width = self.latent_dim
        for h in _hidden("hidden", hidden):
            blocks.append(_Residual(width, h))
            width += h
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.Linear(width, self.output_dim)

    def forward(self, z: Tensor) -> Tensor:
        raw = self.out(self.blocks(z))
        if not self.categorical_spans and not self.tanh_columns:
            return raw
        blocks = sorted([(a, b, "softmax") for a, b in self.categorical_spans]
                        + [(i, i + 1, "tanh") for i in self.tanh_columns])
        parts, pos = [], 0
        for a, b, act in blocks:
            if a > pos:
                parts.append(raw[:, pos:a])
            parts.append(self.tanh_scale * torch.tanh(raw[:, a:b]) if act == "tanh"
                         else nn.functional.gumbel_softmax(raw[:, a:b], tau=self.tau))
            pos = b
        if pos < self.output_dim:
            parts.append(raw[:, pos:])
        return torch.cat(parts, dim=1)
