"""The ops under torch.func transforms, eager and compiled: the input gradient by torch.func.grad
and the parameter gradients by torch.func.grad over the penalty (the double backward as nested
transforms) equal autograd's create_graph double backward in float64. The registered ops' own
autograd does not compose with torch.func; the twins (setup_context autograd.Functions) do."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, grad, grad_and_value

import wgangp_fast
from wgangp_fast.train.models import MLPCritic, PacCritic

from ..cases import DEVICE, backend_params

BACKEND = backend_params()


def _problem(kind):
    torch.manual_seed(3)
    if kind == "mlp":
        critic, shape, pac = MLPCritic((3, 4), hidden_dim=4), (6, 3, 4), 1
    else:
        critic, shape, pac = PacCritic(5, pac=2, hidden=(7, 6), dropout=0.0), (6, 5), 2
    critic = critic.double().to(DEVICE)
    real = torch.randn(*shape, dtype=torch.float64, device=DEVICE)
    fake = torch.randn(*shape, dtype=torch.float64, device=DEVICE)
    alpha = torch.rand(shape[0] // pac, dtype=torch.float64, device=DEVICE)
    return critic, real, fake, alpha, pac


def _autograd_reference(critic, real, fake, alpha, pac, backend):
    x = wgangp_fast.interpolate(real, fake, alpha, pac=pac, backend=backend).requires_grad_()
    out = critic(x)
    (g,) = torch.autograd.grad(out, x, torch.ones_like(out), create_graph=True)
    pen = wgangp_fast.gradient_norm_penalty(g, pac=pac, target=0.7, scale=10.0, backend=backend)
    params = list(critic.parameters())
    grads = torch.autograd.grad(pen, params, allow_unused=True)
    return pen.detach(), [torch.zeros_like(p) if d is None else d for d, p in zip(grads, params)]


def _functional(critic, real, fake, alpha, pac, backend):
    def loss(params):
        x = wgangp_fast.interpolate(real, fake, alpha, pac=pac, backend=backend)
        g = grad(lambda x: functional_call(critic, params, (x,)).sum())(x)
        return wgangp_fast.gradient_norm_penalty(g, pac=pac, target=0.7, scale=10.0,
                                                 backend=backend)

    return grad_and_value(loss)


@pytest.mark.parametrize("kind", ["mlp", "pac"])
@pytest.mark.parametrize("backend", BACKEND)
def test_torch_func_double_backward_equals_autograd(backend, kind):
    critic, real, fake, alpha, pac = _problem(kind)
    value, expected = _autograd_reference(critic, real, fake, alpha, pac, backend)
    params = dict(critic.named_parameters())
    grads, got = _functional(critic, real, fake, alpha, pac, backend)(params)
    torch.testing.assert_close(got, value, rtol=1e-12, atol=0)
    for d, e in zip(grads.values(), expected):
        torch.testing.assert_close(d, e, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("backend", BACKEND)
def test_compiled_grad_and_value_over_the_ops(backend):
    """torch.compile(fullgraph=True) of torch.func.grad_and_value over the penalty: the case that
    failed with "Observed exception" while the ops went through their registered autograd."""
    if backend == "triton" and DEVICE.type == "cpu":
        pytest.skip("torch.compile does not trace the Triton interpreter")
    critic, real, fake, alpha, pac = _problem("pac")
    value, expected = _autograd_reference(critic, real, fake, alpha, pac, backend)
    params = dict(critic.named_parameters())
    compiled = torch.compile(_functional(critic, real, fake, alpha, pac, backend),
                             backend="aot_eager", fullgraph=True)
    grads, got = compiled(params)
    torch.testing.assert_close(got, value, rtol=1e-12, atol=0)
    for d, e in zip(grads.values(), expected):
        torch.testing.assert_close(d, e, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("backend", BACKEND)
def test_torch_func_grad_of_interpolate_alpha(backend):
    """d/d alpha through torch.func.grad: sum over each group of (real - fake) * upstream."""
    _, real, fake, alpha, pac = _problem("pac")
    weights = torch.linspace(-1, 1, real.numel(), dtype=torch.float64,
                             device=DEVICE).reshape(real.shape)

    def f(a):
        return (wgangp_fast.interpolate(real, fake, a, pac=pac, backend=backend) * weights).sum()

    expected = ((real - fake) * weights).reshape(alpha.shape[0], -1).sum(1)
    torch.testing.assert_close(grad(f)(alpha), expected, rtol=1e-12, atol=1e-14)
