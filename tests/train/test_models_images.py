"""The WGAN-GP paper's ResNet pair and the conditional wrappers (projection critic, label
embedding generator, CTGAN-style concatenation for the packed critic)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from wgangp_fast.train.models import ConvCritic, MLPCritic, PacCritic
from wgangp_fast.train.models_conditional import (
    ConcatPacCritic,
    ConditionalGenerator,
    ProjectionCritic,
)
from wgangp_fast.train.models_resnet import ResNetCritic, ResNetGenerator

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("size,channels", [(8, 1), (16, 3), (32, 3), (64, 1)])
def test_resnet_shapes(size, channels):
    g = ResNetGenerator(16, channels, size, width=8)
    c = ResNetCritic(channels, size, width=8)
    x = g(torch.randn(3, 16))
    assert x.shape == (3, channels, size, size) and x.abs().max() <= 1
    assert c(x).shape == (3, 1)
    assert c.features(x).shape == (3, 8)
    torch.testing.assert_close(c.score(c.features(x)), c(x))


def test_resnet_is_the_papers_at_32x32():
    """Three up-sampling blocks (4 -> 32) in the generator; in the critic 32 -> 16 -> 8, then two
    blocks at 8x8, 128 channels; no BatchNorm in the critic."""
    g, c = ResNetGenerator(128, 3, 32), ResNetCritic(3, 32)
    assert len(g.blocks) == 3 and len(c.blocks) == 4
    assert [b.down for b in c.blocks] == [True, True, False, False]
    assert all(m.out_channels == 128 for m in c.modules() if isinstance(m, nn.Conv2d))
    for norm in ("none", "layer"):
        critic = ResNetCritic(3, 32, width=8, norm=norm)
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in critic.modules())
        assert any(isinstance(m, nn.GroupNorm) for m in critic.modules()) == (norm == "layer")
    with pytest.raises(ValueError, match="norm must be one of none, layer"):
        ResNetCritic(3, 32, norm="batch")
    with pytest.raises(ValueError, match="power of two"):
        ResNetGenerator(8, 3, 24)


@pytest.mark.parametrize("norm", ["none", "layer"])
def test_resnet_critic_scores_each_sample_alone_and_has_a_second_derivative(norm):
    """What the gradient penalty needs: D(x_i) independent of the rest of the batch, and the
    gradient of the input gradient (double backward) exact in float64."""
    torch.manual_seed(0)
    c = ResNetCritic(1, 8, width=2, norm=norm).double()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    alone = torch.cat([c(x[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(c(x), alone)
    x.requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda v: c(v).sum(), (x,), eps=1e-6, atol=1e-4)


def test_critic_features_and_score_compose_to_the_forward():
    torch.manual_seed(0)
    for critic, x in ((ConvCritic(1, 16, 4), torch.randn(3, 1, 16, 16)),
                      (MLPCritic((2, 3), 5), torch.randn(3, 2, 3))):
        torch.testing.assert_close(critic.score(critic.features(x)), critic(x))


def test_projection_critic_is_score_plus_inner_product():
    torch.manual_seed(0)
    base = ConvCritic(1, 8, 4)
    critic = ProjectionCritic(base, 5, feature_dim=4 * 16)
    x, y = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 4, 0])
    phi = base.features(x)
    expected = base(x) + (critic.embedding(y) * phi).sum(1, keepdim=True)
    torch.testing.assert_close(critic(x, y), expected)
    # the label changes the score, through the projection only
    assert not torch.allclose(critic(x, y), critic(x, (y + 1) % 5))
    with pytest.raises(ValueError, match=r"labels must be 6 integer class indices"):
        critic(x, y.float())
    with pytest.raises(TypeError, match="needs a base critic with a features"):
        ProjectionCritic(nn.Linear(3, 1), 5, 3)


def test_conditional_generator_concatenates_a_label_embedding():
    torch.manual_seed(0)
    base = nn.Linear(8, 2)
    gen = ConditionalGenerator(base, 3, latent_dim=4)
    z, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 1, 0])
    torch.testing.assert_close(gen(z, y), base(torch.cat([z, gen.embedding(y)], 1)))
    assert not torch.allclose(gen(z, y), gen(z, (y + 1) % 3))


def test_packed_critic_sees_the_one_hot_label_of_every_row():
    torch.manual_seed(0)
    base = PacCritic(3 + 4, pac=2, hidden=(5,), dropout=0.0)
    critic = ConcatPacCritic(base, 4)
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 3, 0, 1])
    expected = base(torch.cat([x, nn.functional.one_hot(y, 4).float()], 1))
    torch.testing.assert_close(critic(x, y), expected)
    assert critic(x, y).shape == (3, 1)
