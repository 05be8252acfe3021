"""Generators and critics of wgangp_fast.train.models: shapes, argument checks, double backward through
the in-place activations, spectral normalisation and the packed critic."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from wgangp_fast import gradient_penalty
from wgangp_fast.testing import ctgan_gradient_penalty, per_sample_gradient_penalty
from wgangp_fast.train.models import (
    ConvCritic,
    ConvGenerator,
    MLPCritic,
    MLPGenerator,
    PacCritic,
    TabularGenerator,
    init_he,
)


def test_mlp_generator_shapes_and_activation():
    g = MLPGenerator(latent_dim=10, hidden_dim=8, out_shape=(1, 6, 6))
    x = g(torch.randn(5, 10))
    assert x.shape == (5, 1, 6, 6)
    assert x.abs().max() <= 1.0
    widths = [m.out_features for m in g.modules() if isinstance(m, nn.Linear)]
    assert widths == [8, 16, 32, 36]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in g.modules()) == 3

    unbounded = MLPGenerator(10, 8, (2,), output_activation=None)
    with torch.no_grad():
        unbounded.net[-1].bias.fill_(5.0)
    assert unbounded(torch.randn(4, 10)).shape == (4, 2)
    assert unbounded(torch.randn(4, 10)).min() > 1.0


def test_mlp_generator_without_batchnorm():
    g = MLPGenerator(latent_dim=4, hidden_dim=8, out_shape=(2,), output_activation=None,
                     batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in g.modules())
    g.train()
    z = torch.randn(6, 4)
    # no batch coupling: a sample's output does not depend on the rest of its batch
    assert torch.allclose(g(z)[:3], g(z[:3]))


def test_mlp_generator_init_is_normal_002():
    g = MLPGenerator(latent_dim=100, hidden_dim=64, out_shape=(2,), output_activation=None)
    w = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, nn.Linear)])
    assert abs(w.std().item() - 0.02) < 0.002
    assert all((m.bias == 0).all() for m in g.modules() if isinstance(m, nn.Linear))


def test_init_he_keeps_the_scale_of_a_generator_without_batchnorm():
    # init_normal's N(0, 0.02) shrinks the signal at each layer: the toy generator's samples start
    # near the origin. He's init keeps it: the output's spread stays of the latent's order.
    torch.manual_seed(0)
    g = MLPGenerator(2, 64, (2,), None, batch_norm=False)
    z = torch.randn(4096, 2)
    with torch.no_grad():
        assert g(z).std() < 1e-3
        init_he(g)
        assert 0.2 < g(z).std() < 5.0
    lin = [m for m in g.modules() if isinstance(m, nn.Linear)]
    for m, gain in zip(lin, [2 ** 0.5] * 3 + [1.0]):
        fan_in = m.weight.shape[1]
        assert m.weight.std().item() == pytest.approx(gain / fan_in ** 0.5, rel=0.25)
        assert torch.count_nonzero(m.bias) == 0


def test_init_he_gain_follows_the_next_activation():
    torch.manual_seed(0)
    c = MLPCritic((2,), 64)
    init_he(c)
    lin = [m for m in c.modules() if isinstance(m, nn.Linear)]
    leaky = nn.init.calculate_gain("leaky_relu", 0.2)
    for m, gain in zip(lin, [leaky] * 3 + [1.0]):
        assert m.weight.std().item() == pytest.approx(gain / m.weight.shape[1] ** 0.5, rel=0.25)
    # spectral-norm layers keep the init they were wrapped with
    sn = MLPCritic((2,), 8, spectral_norm=True)
    before = [p.detach().clone() for p in sn.parameters()]
    init_he(sn)
    assert all(torch.equal(a, b) for a, b in zip(before, sn.parameters()))


def test_mlp_critic_structure():
    c = MLPCritic(in_shape=(1, 4, 4), hidden_dim=8)
    assert c(torch.randn(3, 1, 4, 4)).shape == (3, 1)
    widths = [m.out_features for m in c.modules() if isinstance(m, nn.Linear)]
    assert widths == [32, 16, 8, 1]
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.LayerNorm)) for m in c.modules())


@pytest.mark.parametrize("size,stages", [(8, 1), (32, 3), (64, 4)])
def test_conv_pair_shapes(size, stages):
    g = ConvGenerator(latent_dim=6, channels=3, image_size=size, feature_maps=4)
    c = ConvCritic(channels=3, image_size=size, feature_maps=4)
    x = g(torch.randn(2, 6))
    assert x.shape == (2, 3, size, size)
    assert x.abs().max() <= 1.0
    assert c(x).shape == (2, 1)
    convs = [m for m in c.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == stages + 1
    assert sum(isinstance(m, nn.LayerNorm) for m in c.modules()) == stages - 1
    assert not any(isinstance(m, nn.Sigmoid) for m in c.modules())


@pytest.mark.parametrize("bad", [28, 4, 0, 48, True])
def test_conv_image_size_checked(bad):
    with pytest.raises(ValueError, match="image_size"):
        ConvCritic(image_size=bad)
    with pytest.raises(ValueError, match="image_size"):
        ConvGenerator(image_size=bad)


@pytest.mark.parametrize("kwargs,match", [
    ({"hidden_dim": 0}, "hidden_dim"),
    ({"latent_dim": -1}, "latent_dim"),
    ({"out_shape": (0, 2)}, "out_shape"),
    ({"output_activation": "sigmoid"}, "output_activation"),
])
def test_mlp_generator_arguments_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MLPGenerator(**kwargs)


def test_pac_critic_packs_consecutive_rows():
    torch.manual_seed(0)
    c = PacCritic(input_dim=3, pac=4, hidden=(8, 8), dropout=0.0)
    x = torch.randn(8, 3)
    out = c(x)
    assert out.shape == (2, 1)
    assert torch.allclose(out[1], c(x[4:]).squeeze(0))
    first = c.net[0]
    assert first.in_features == 12
    with pytest.raises(ValueError, match="multiple of pac=4"):
        c(torch.randn(6, 3))
    with pytest.raises(ValueError, match="dropout"):
        PacCritic(3, dropout=1.0)


def test_pac_critic_layers_are_ctgans():
    c = PacCritic(input_dim=5, pac=10)
    kinds = [type(m).__name__ for m in c.net]
    assert kinds == ["Linear", "LeakyReLU", "Dropout", "Linear", "LeakyReLU", "Dropout", "Linear"]
    assert c.net[1].negative_slope == 0.2 and c.net[2].p == 0.5


def test_tabular_generator_one_hot_spans():
    torch.manual_seed(0)
    g = TabularGenerator(latent_dim=6, output_dim=7, hidden=(16, 16),
                         categorical_spans=[(1, 4), (5, 7)])
    x = g(torch.randn(32, 6))
    assert x.shape == (32, 7)
    assert torch.allclose(x[:, 1:4].sum(1), torch.ones(32), atol=1e-5)
    assert torch.allclose(x[:, 5:7].sum(1), torch.ones(32), atol=1e-5)
    assert (x[:, 1:4] >= 0).all()
    assert g.out.in_features == 6 + 16 + 16
    with pytest.raises(ValueError, match="categorical_spans"):
        TabularGenerator(6, 7, categorical_spans=[(5, 9)])


def _not_inplace(module: nn.Module) -> nn.Module:
    twin = copy.deepcopy(module)
    for m in twin.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    return twin


@pytest.mark.parametrize("make,shape", [
    (lambda: MLPCritic(in_shape=(2,), hidden_dim=4), (6, 2)),
    (lambda: ConvCritic(channels=1, image_size=8, feature_maps=3), (4, 1, 8, 8)),
    (lambda: ConvCritic(channels=2, image_size=16, feature_maps=2), (3, 2, 16, 16)),
])
def test_inplace_activations_keep_double_backward_exact(make, shape):
    torch.manual_seed(1)
    critic = make().double()
    twin = _not_inplace(critic)
    assert any(getattr(m, "inplace", False) for m in critic.modules())
    real, fake = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    grads = []
    for c in (critic, twin):
        torch.manual_seed(2)
        c.zero_grad()
        loss = per_sample_gradient_penalty(c, real, fake, lambda_gp=10.0)
        (loss - c(real).mean()).backward()
        grads.append([p.grad.clone() for p in c.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
    assert any(g.abs().sum() > 0 for g in grads[0])


def test_inplace_critic_gradgradcheck():
    torch.manual_seed(3)
    critic = MLPCritic(in_shape=(3,), hidden_dim=2).double()
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: critic(t).sum(), (x,))


def test_spectral_norm_bounds_each_layer():
    torch.manual_seed(4)
    critic = MLPCritic(in_shape=(2,), hidden_dim=8, spectral_norm=True)
    for _ in range(30):
        critic(torch.randn(16, 2))
    for m in critic.modules():
        if isinstance(m, nn.Linear):
            sigma = torch.linalg.matrix_norm(m.weight.detach(), ord=2)
            assert sigma.item() == pytest.approx(1.0, abs=0.05)
    conv = ConvCritic(channels=1, image_size=8, feature_maps=4, spectral_norm=True)
    assert not any(isinstance(m, nn.LayerNorm) for m in conv.modules())
    assert conv(torch.randn(2, 1, 8, 8)).shape == (2, 1)


def test_models_work_with_the_fused_penalty():
    torch.manual_seed(5)
    critic = PacCritic(input_dim=4, pac=2, hidden=(8,), dropout=0.0)
    real, fake = torch.randn(6, 4), torch.randn(6, 4)
    torch.manual_seed(6)
    fused = gradient_penalty(critic, real, fake, pac=2)
    torch.manual_seed(6)
    ref = ctgan_gradient_penalty(critic, real, fake, pac=2, lambda_=10.0)
    assert torch.allclose(fused, ref, rtol=1e-5, atol=1e-6)


def test_numpy_integers_are_accepted_as_sizes():
    import numpy as np

    from wgangp_fast.train.models import ConvCritic, MLPCritic, MLPGenerator

    g = MLPGenerator(np.int64(4), np.int32(8), (np.int64(2),))
    assert g(torch.randn(3, 4)).shape == (3, 2)
    assert MLPCritic(np.int64(2), np.uint8(8))(torch.randn(3, 2)).shape == (3, 1)
    c = ConvCritic(np.int64(1), np.int64(8), np.int64(4))
    assert type(c.image_size) is int and c(torch.randn(2, 1, 8, 8)).shape == (2, 1)
    with pytest.raises(ValueError, match="hidden_dim must be a positive int"):
        MLPCritic(2, np.float64(8.0))
