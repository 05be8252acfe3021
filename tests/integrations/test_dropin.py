"""drop_in_penalty: the function-style drop-in's own rules (lambda stated, no device argument,
keyword critic inputs, returned norms, the 3-D warning)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import wgangp_fast
from wgangp_fast.integrations import drop_in_penalty
from wgangp_fast.testing import per_sample_gradient_penalty

F64 = {"rtol": 1e-12, "atol": 1e-13}


class Labelled(nn.Module):
    """critic(x, labels): a class embedding added to the score, as conditional critics do."""

    def __init__(self, d, classes=3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d, 8), nn.Tanh(), nn.Linear(8, 1)).double()
        self.embed = nn.Embedding(classes, d).double()

    def forward(self, x, labels):
        h = x.reshape(x.shape[0], -1)
        return self.body(h * self.embed(labels))


def test_lambda_is_required_and_named():
    critic = Labelled(4)
    real, fake = torch.randn(4, 4, dtype=torch.float64), torch.randn(4, 4, dtype=torch.float64)
    with pytest.raises(TypeError, match="needs lambda_gp.*10, 1 and 0.1"):
        drop_in_penalty(critic, real, fake, torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")], ids=["str", "torch.device"])
def test_a_device_argument_is_refused_not_passed_to_the_critic(device):
    critic = Labelled(4)
    real, fake = torch.randn(4, 4, dtype=torch.float64), torch.randn(4, 4, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"inputs\[0\] is a device .* takes no device argument"):
        drop_in_penalty(critic, real, fake, device, lambda_gp=10.0)


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")], ids=["str", "torch.device"])
def test_a_device_keyword_gets_the_positional_forms_refusal(device):
    critic = Labelled(4)
    real, fake = torch.randn(4, 4, dtype=torch.float64), torch.randn(4, 4, dtype=torch.float64)
    with pytest.raises(TypeError) as positional:
        drop_in_penalty(critic, real, fake, device, lambda_gp=10)
    with pytest.raises(TypeError) as keyword:
        drop_in_penalty(critic, real, fake, device=device, lambda_gp=10)
    tail = str(positional.value).split(": ", 1)[1]
    assert str(keyword.value) == f"device= is a device ({device!r}): {tail}"
    assert "takes no device argument" in tail


def test_labels_positional_or_keyword_and_norms():
    torch.manual_seed(0)
    critic = Labelled(5)
    real, fake = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    torch.manual_seed(1)
    want = per_sample_gradient_penalty(critic, real, fake, labels, lambda_gp=2.5)
    for call in (lambda: drop_in_penalty(critic, real, fake, labels, lambda_gp=2.5),
                 lambda: drop_in_penalty(critic, real, fake, labels=labels, lambda_gp=2.5)):
        torch.manual_seed(1)
        torch.testing.assert_close(call(), want, **F64)
    torch.manual_seed(1)
    gp, norms = drop_in_penalty(critic, real, fake, labels=labels, lambda_gp=2.5,
                                return_norms=True)
    torch.testing.assert_close(gp, 2.5 * ((norms - 1) ** 2).mean(), **F64)
    assert norms.shape == (6,) and norms.requires_grad


def test_generator_graph_is_cut_by_default():
    torch.manual_seed(0)
    critic, gen = Labelled(3), nn.Linear(2, 3).double()
    real = torch.randn(4, 3, dtype=torch.float64)
    labels = torch.zeros(4, dtype=torch.long)
    drop_in_penalty(critic, real, gen(torch.randn(4, 2, dtype=torch.float64)), labels,
                    lambda_gp=1.0).backward()
    assert all(p.grad is None for p in gen.parameters())
    drop_in_penalty(critic, real, gen(torch.randn(4, 2, dtype=torch.float64)), labels,
                    lambda_gp=1.0, detach_inputs=False).backward()
    assert all(p.grad is not None for p in gen.parameters())


def test_three_dimensional_data_warns_until_norm_dims_is_stated():
    critic = lambda x: (x ** 3).flatten(1).sum(1)  # noqa: E731
    real, fake = torch.randn(4, 3, 5, dtype=torch.float64), torch.randn(4, 3, 5,
                                                                          dtype=torch.float64)
    with pytest.warns(UserWarning, match=r"shape \[4, 3, 5\].*norm_dims=1.*norm_dims=\(1, 2\)"):
        drop_in_penalty(critic, real, fake, lambda_gp=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        every = drop_in_penalty(critic, real, fake, lambda_gp=1.0, norm_dims=(1, 2),
                                generator=torch.Generator().manual_seed(0))
        one = drop_in_penalty(critic, real, fake, lambda_gp=1.0, norm_dims=1,
                              generator=torch.Generator().manual_seed(0))
        drop_in_penalty(critic, real[:, 0], fake[:, 0], lambda_gp=1.0)
        drop_in_penalty(critic, real[:, None], fake[:, None], lambda_gp=1.0)
        drop_in_penalty(critic, real, fake, lambda_gp=1.0, norm_dims="all")
        drop_in_penalty(critic, real, fake, lambda_gp=1.0, norm_per="batch")
    assert not torch.allclose(every, one)


def test_exported_at_the_top_level():
    assert wgangp_fast.drop_in_penalty is drop_in_penalty
