"""The drop-in layer's layouts: alpha in any per-sample shape or drawn by alpha_fn, norms over
chosen axes, detached inputs, critic keyword inputs, returned norms, CTGAN's device check; each
against a plain-autograd float64 reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import wgangp_fast
from wgangp_fast.penalty import gradient_penalty, norm_layout, per_group_alpha
from wgangp_fast.testing import ctgan_gradient_penalty

from .cases import FUSED_GRAD_FN, node_name

F64 = {"rtol": 1e-12, "atol": 1e-13}


pytestmark = pytest.mark.usefixtures("one_thread")


class Dense(nn.Module):
    """A float64 MLP critic over the flattened sample, with a smooth nonlinearity so the
    penalty's gradient has second-order terms everywhere."""

    def __init__(self, d, hidden=12):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, 1)).double()

    def forward(self, x, *extra, shift=None):
        h = x.reshape(x.shape[0], -1)
        out = self.net(h)
        for e in extra:
            out = out + e.reshape(out.shape[0], -1).sum(1, keepdim=True)
        if shift is not None:
            out = out * shift.reshape(-1, 1)
        return out


def _grads(module):
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in module.parameters()]


def _reference(critic, real, fake, alpha_full, norm_axes=None, lambda_gp=10.0, eps=0.0):
    """lambda * mean((||grad|| - 1)^2) with the norm over `norm_axes` (every non-batch axis by
    default), alpha broadcast over real's shape: plain autograd, the code being replaced."""
    x = (alpha_full * real + (1 - alpha_full) * fake).requires_grad_(True)
    out = critic(x)
    (g,) = torch.autograd.grad(out, x, torch.ones_like(out), create_graph=True)
    if norm_axes is None:
        g = g.reshape(g.shape[0], -1)
        norm_axes = (1,)
    if eps:
        n = torch.sqrt((g * g).sum(dim=norm_axes) + eps)
    else:
        n = g.norm(2, dim=norm_axes)
    return lambda_gp * ((n - 1) ** 2).mean(), n


def _data(shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen, dtype=torch.float64),
            torch.randn(shape, generator=gen, dtype=torch.float64))


SHAPE = (6, 3, 4, 5)


def _layouts(a):
    """The per-sample layouts codes give alpha, for a [6] vector of per-sample values."""
    n, c, h, w = SHAPE
    return {
        "[B]": a,
        "[B,1]": a.view(n, 1),
        "[B,1,1,1]": a.view(n, 1, 1, 1),
        "[B,1,1,1] expanded": a.view(n, 1, 1, 1).expand(SHAPE),
        "[B,1,H,W] expanded": a.view(n, 1, 1, 1).expand(n, 1, h, w),
        "[B,C,1,1]": a.view(n, 1, 1, 1).repeat(1, c, 1, 1),
        "full materialised": a.view(n, 1, 1, 1).expand(SHAPE).contiguous(),
        "flat [B,D] viewed": a.view(n, 1).expand(n, c * h * w).contiguous().view(SHAPE),
    }


@pytest.mark.parametrize("layout", list(_layouts(torch.zeros(6))))
def test_alpha_in_every_per_sample_layout_gives_the_same_penalty(layout):
    torch.manual_seed(0)
    critic = Dense(3 * 4 * 5)
    real, fake = _data(SHAPE)
    a = torch.rand(6, dtype=torch.float64)
    shaped = _layouts(a)[layout]
    got = gradient_penalty(critic, real, fake, alpha=shaped, backend="cpu")
    got.backward()
    got_grads = _grads(critic)
    critic.zero_grad()
    want, _ = _reference(critic, real, fake, a.view(6, 1, 1, 1))
    want.backward()
    torch.testing.assert_close(got, want, **F64)
    for g, w in zip(got_grads, _grads(critic)):
        torch.testing.assert_close(g, w, **F64)
    assert torch.equal(per_group_alpha(shaped, real), a)


def test_packed_alpha_layout_of_ctgan_is_read_per_group():
    real, fake = _data((8, 5))
    a = torch.rand(4, 1, 1, dtype=torch.float64)
    ctgan_layout = a.repeat(1, 2, 5).view(-1, 5)
    assert torch.equal(per_group_alpha(ctgan_layout, real, pac=2), a.view(4))
    assert torch.equal(per_group_alpha(a, real, pac=2), a.view(4))


def test_alpha_with_different_values_in_a_group_is_refused():
    real, _ = _data(SHAPE)
    a = torch.rand(6, 1, 1, 1, dtype=torch.float64).expand(SHAPE).clone()
    a[2, 1, 0, 3] += 0.25
    with pytest.raises(ValueError, match=r"group 2 holds different values"):
        per_group_alpha(a, real)
    packed = torch.rand(6, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"one value per group of pac=2 samples, but group 0"):
        per_group_alpha(packed, torch.zeros(6, 1, dtype=torch.float64), pac=2)


@pytest.mark.parametrize("bad", [torch.rand(5, 1), torch.rand(6, 2, 1, 1), torch.rand(1, 6, 2),
                                 torch.rand(6, 1, 1, 1, 2)],
                         ids=["wrong-batch", "wrong-axis", "batch-not-leading", "too-many-axes"])
def test_alpha_that_is_not_per_sample_is_a_clear_error(bad):
    real, _ = _data(SHAPE)
    with pytest.raises(ValueError, match=r"alpha must hold M=6 values .* got shape"):
        per_group_alpha(bad.double(), real)


def test_alpha_fn_draws_and_errors_name_it():
    real, fake = _data((6, 4))
    seen = []

    def fn(m, like):
        seen.append((m, like.shape))
        return torch.full((m, 1), 0.25, dtype=torch.float64)

    assert torch.equal(per_group_alpha(None, real, pac=3, alpha_fn=fn),
                       torch.full((2,), 0.25, dtype=torch.float64))
    assert seen == [(2, real.shape)]
    with pytest.raises(TypeError, match="the tensor alpha_fn returned must be a torch.Tensor"):
        per_group_alpha(None, real, alpha_fn=lambda m, like: [0.5] * m)
    with pytest.raises(ValueError, match="alpha or alpha_fn, not both"):
        per_group_alpha(torch.rand(6), real, alpha_fn=fn)
    with pytest.raises(TypeError, match="alpha_fn must be callable"):
        per_group_alpha(None, real, alpha_fn=3)
    with pytest.raises(TypeError, match="alpha must be a torch.Tensor of 6 values"):
        per_group_alpha(np.zeros(6), real)


def test_alpha_fn_recipes_reproduce_numpy_and_cpu_draws():
    torch.manual_seed(0)
    critic = Dense(12)
    real, fake = _data((5, 3, 4))
    np.random.seed(3)
    numpy_alpha = torch.tensor(np.random.random((5, 1, 1)))
    want, _ = _reference(critic, real, fake, numpy_alpha)
    np.random.seed(3)
    got = gradient_penalty(critic, real, fake, backend="cpu",
                           alpha_fn=lambda m, like: torch.from_numpy(np.random.random(m)).to(like))
    torch.testing.assert_close(got, want, **F64)
    assert np.random.random() == pytest.approx(np.random.RandomState(3).random(6)[5])

    torch.manual_seed(4)
    cpu_alpha = torch.rand(5, 1).expand(5, 12).reshape(5, 3, 4)
    want, _ = _reference(critic, real, fake, cpu_alpha)
    torch.manual_seed(4)
    got = gradient_penalty(critic, real, fake, backend="cpu",
                           alpha_fn=lambda m, like: torch.rand(m, 1).to(like.device))
    torch.testing.assert_close(got, want, **F64)


@pytest.mark.parametrize("shape,axes", [
    ((6, 7, 5), 1), ((6, 7, 5), 2), ((6, 7, 5), -1), ((5, 3, 4, 2), 1), ((5, 3, 4, 2), (2, 3)),
    ((5, 3, 4, 2), (3, 1)), ((1, 7, 1), 1),
], ids=str)
@pytest.mark.parametrize("backend", [b for b in ("cpu", "reference")
                                     if b in wgangp_fast.available_backends()])
def test_norm_dims_match_a_norm_over_those_axes(shape, axes, backend):
    torch.manual_seed(0)
    critic = Dense(int(np.prod(shape[1:])))
    real, fake = _data(shape)
    torch.manual_seed(1)
    a = torch.rand(shape[0], dtype=torch.float64)
    full = a.view(-1, *([1] * (len(shape) - 1)))
    want, want_norms = _reference(critic, real, fake, full, norm_axes=axes, lambda_gp=3.0)
    want.backward()
    want_grads = _grads(critic)
    critic.zero_grad()
    got, norms = gradient_penalty(critic, real, fake, lambda_gp=3.0, alpha=a, norm_dims=axes,
                                  return_norms=True, backend=backend)
    got.backward()
    torch.testing.assert_close(got, want, **F64)
    torch.testing.assert_close(norms, want_norms, **F64)
    for g, w in zip(_grads(critic), want_grads):
        torch.testing.assert_close(g, w, **F64)
    per_element = gradient_penalty(critic, real, fake, lambda_gp=3.0, alpha=a, norm_dims=axes,
                                   reduction="none", backend=backend)
    assert per_element.shape == want_norms.shape
    torch.testing.assert_close(per_element, 3.0 * (want_norms - 1) ** 2, **F64)


def test_norm_dims_second_order_by_gradcheck():
    real, fake = _data((3, 4, 2))
    a = torch.rand(3, dtype=torch.float64)
    w0 = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)

    def penalty(w):
        def critic(x):
            return torch.tanh(x * w).sum(dim=(1, 2)) + (x * w).pow(2).sum(dim=(1, 2))
        return gradient_penalty(critic, real, fake, lambda_gp=2.0, alpha=a, norm_dims=1,
                                backend="cpu")

    assert torch.autograd.gradcheck(penalty, (w0,))


def test_norm_dims_over_every_axis_is_the_default_layout():
    assert norm_layout(None, (4, 3, 2)) is None
    assert norm_layout((2, 1), (4, 3, 2)) is None
    assert norm_layout(-1, (4, 3, 2)) == ([0, 1, 2], [4, 3], 2)
    assert norm_layout((1, 3), (4, 3, 2, 5)) == ([0, 2, 1, 3], [4, 2], 15)
    # a pac penalty norms over whole groups: only the default layout goes with it
    assert norm_layout((1, 2), (4, 3, 2), pac=2) is None


@pytest.mark.parametrize("dims,error,match", [
    (0, ValueError, r"batch axis 0 but not every axis.*'all' \(or \(0, 1, 2\)\)"),
    ((0, 1), ValueError, "norm_per=k one norm per k samples"), (3, ValueError, "out of range"),
    ((1, 1), ValueError, "axis 1 twice"), ((), ValueError, "at least one axis"),
    ("last", ValueError, "norm_dims must be None, 'all'"), (1.0, TypeError, "norm_dims must be"),
    ((True,), TypeError, "must hold ints"),
])
def test_bad_norm_dims(dims, error, match):
    with pytest.raises(error, match=match):
        norm_layout(dims, (4, 3, 2))


def test_norm_dims_with_pac_is_refused():
    critic = Dense(6)
    real, fake = _data((4, 3, 2))
    with pytest.raises(ValueError, match="cannot be combined with pac=2"):
        gradient_penalty(critic, real, fake, pac=2, norm_dims=1)


def test_detach_inputs_keeps_the_penalty_out_of_the_generator():
    torch.manual_seed(0)
    critic, gen = Dense(4), nn.Linear(3, 4).double()
    real = torch.randn(6, 4, dtype=torch.float64)
    z = torch.randn(6, 3, dtype=torch.float64)

    def run(detach_inputs, fake_of):
        critic.zero_grad(set_to_none=True)
        gen.zero_grad(set_to_none=True)
        torch.manual_seed(5)
        gradient_penalty(critic, real, fake_of(gen(z)), detach_inputs=detach_inputs,
                         backend="cpu").backward()
        return _grads(critic), [p.grad for p in gen.parameters()]

    c_default, g_default = run(True, lambda f: f)
    c_data, g_data = run(False, lambda f: f.data)
    c_graph, g_graph = run(False, lambda f: f)
    assert g_default == [None, None] and g_data == [None, None]
    assert all(g is not None and g.abs().sum() > 0 for g in g_graph)
    for a, b, c in zip(c_default, c_data, c_graph):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, c, **F64)
    with pytest.raises(TypeError, match="detach_inputs must be a bool"):
        gradient_penalty(critic, real, real, detach_inputs="no")


def test_critic_keyword_inputs_and_returned_norms():
    torch.manual_seed(0)
    critic = Dense(4)
    real, fake = _data((6, 4))
    labels, shift = torch.randn(6, 2, dtype=torch.float64), torch.rand(6, dtype=torch.float64)
    torch.manual_seed(2)
    a = torch.rand(6)
    want, want_norms = _reference(lambda x: critic(x, labels, shift=shift), real, fake,
                                  a.view(6, 1).double())
    torch.manual_seed(2)
    got, norms = gradient_penalty(critic, real, fake, labels, critic_kwargs={"shift": shift},
                                  return_norms=True, backend="cpu")
    torch.testing.assert_close(got, want, **F64)
    torch.testing.assert_close(norms, want_norms, **F64)
    with pytest.raises(TypeError, match="critic_kwargs must be a dict"):
        gradient_penalty(critic, real, fake, critic_kwargs=[("shift", shift)])


def test_calc_gradient_penalty_checks_device_like_ctgan():
    critic = Dense(5)
    real, fake = torch.randn(10, 5, dtype=torch.float64), torch.randn(10, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"device is 'cuda' but real_data is on cpu.*device='cpu'"):
        wgangp_fast.calc_gradient_penalty(critic, real, fake, device="cuda", pac=2)
    with pytest.raises(ValueError, match=r"device is 'meta' but real_data is on cpu"):
        wgangp_fast.calc_gradient_penalty(critic, real, fake, torch.device("meta"), pac=2)
    with pytest.raises(TypeError, match="device must be a torch.device or a device string"):
        wgangp_fast.calc_gradient_penalty(critic, real, fake, device="gpu0", pac=2)
    torch.manual_seed(3)
    got = wgangp_fast.calc_gradient_penalty(critic, real, fake, torch.device("cpu"), pac=2,
                                            lambda_=4)
    torch.manual_seed(3)
    want = ctgan_gradient_penalty(critic, real, fake, "cpu", pac=2, lambda_=4)
    torch.testing.assert_close(got, want, **F64)


# ---------------------------------------------------------------------------------------------
# Alpha groups and norm groups apart, and critics of several tensors
# ---------------------------------------------------------------------------------------------


def _batch_norm_reference(critic, real, fake, lambda_gp=10.0):
    """torchgan's WassersteinGradientPenalty, transcribed from its formula: one alpha for the
    batch, drawn as a Python number `torch.rand(1).item()`, the critic's gradient at the
    interpolates, one 2-norm of that whole gradient tensor, lambda * (norm - 1)^2."""
    eps = torch.rand(1).item()
    x = (eps * real + (1 - eps) * fake).requires_grad_(True)
    out = critic(x)
    (g,) = torch.autograd.grad(out, x, torch.ones_like(out), create_graph=True)
    return lambda_gp * (g.norm(2) - 1) ** 2


@pytest.mark.parametrize("options", [
    {"alpha_per": "batch", "norm_per": "batch"}, {"pac": 6}, {"alpha_per": 6, "norm_per": 6},
    {"alpha_per": "batch", "norm_dims": "all"}, {"alpha_per": "batch", "norm_dims": (0, 1, 2, 3)},
    {"alpha_per": "batch", "norm_dims": (3, 2, 1, 0), "norm_per": "batch"},
], ids=str)
def test_one_alpha_and_one_norm_for_the_batch_is_torchgans_penalty(options):
    torch.manual_seed(0)
    critic = Dense(3 * 4 * 5)
    real, fake = _data(SHAPE)
    torch.manual_seed(7)
    want = _batch_norm_reference(critic, real, fake)
    want_after = torch.rand(1)
    want_grads = torch.autograd.grad(want, list(critic.parameters()), allow_unused=True)
    torch.manual_seed(7)
    got, norms = gradient_penalty(critic, real, fake, return_norms=True, backend="cpu",
                                  **options)
    assert torch.equal(torch.rand(1), want_after), "one draw, as torch.rand(1).item() makes"
    assert FUSED_GRAD_FN in node_name(got.grad_fn) and norms.shape == (1,)
    got_grads = torch.autograd.grad(got, list(critic.parameters()), allow_unused=True)
    torch.testing.assert_close(got, want, **F64)
    for g, w in zip(got_grads, want_grads):
        if w is not None:
            torch.testing.assert_close(g, w, **F64)


def test_norm_dims_all_is_one_norm_over_the_batch_not_per_sample():
    torch.manual_seed(0)
    critic = Dense(3 * 4 * 5)
    real, fake = _data(SHAPE)
    a = torch.rand(6, dtype=torch.float64)
    whole = gradient_penalty(critic, real, fake, alpha=a, norm_dims="all", return_norms=True)
    per_sample = gradient_penalty(critic, real, fake, alpha=a, norm_dims=(1, 2, 3),
                                  return_norms=True)
    assert whole[1].shape == (1,) and per_sample[1].shape == (6,)
    torch.testing.assert_close(whole[1][0], per_sample[1].norm(), **F64)
    with pytest.raises(ValueError, match=r"takes one norm over the whole batch .* contradicts "
                                         r"norm_per=2"):
        gradient_penalty(critic, real, fake, norm_dims="all", norm_per=2)


class ListCritic(nn.Module):
    """A critic of a list of tensors, as gretel's DGAN discriminates [attributes, features]:
    flatten each, concatenate, an MLP."""

    def __init__(self, width):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, 10), nn.Tanh(), nn.Linear(10, 1)).double()

    def forward(self, batch):
        return self.net(torch.cat([t.reshape(t.shape[0], -1) for t in batch], dim=1))


def _dgan_reference(critic, real, fake, eps=1e-8):
    """gretel DGAN's penalty, transcribed from its formula: one alpha per sample from
    torch.rand(B), each tensor interpolated as fake + alpha * (real - fake), the critic of the
    list, one norm over every gradient of every tensor of the batch with eps inside the square
    root, mean((norm - 1)^2) unscaled."""
    b = real[0].shape[0]
    alpha = torch.rand(b)
    xs = [(f + alpha.view(-1, *([1] * (f.dim() - 1))) * (r - f)).requires_grad_(True)
          for r, f in zip(real, fake)]
    out = critic(xs)
    grads = torch.autograd.grad(out, xs, torch.ones_like(out), create_graph=True)
    norm = torch.sqrt(sum(torch.sum(g.reshape(b, -1) ** 2) for g in grads) + eps)
    return ((norm - 1.0) ** 2).mean()


def _several(b=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(b, 3), (b, 5, 2)]
    real = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    fake = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    return real, fake


@pytest.mark.parametrize("container", [list, tuple])
def test_one_alpha_per_sample_and_one_norm_over_several_tensors_is_dgans_penalty(container):
    torch.manual_seed(0)
    critic = ListCritic(13)
    real, fake = _several()
    seen = []
    watched = lambda xs: (seen.append(type(xs)), critic(xs))[1]  # noqa: E731
    torch.manual_seed(3)
    want = _dgan_reference(critic, real, fake)
    want_grads = torch.autograd.grad(want, list(critic.parameters())[:3])
    torch.manual_seed(3)
    got = gradient_penalty(watched, container(real), container(fake), lambda_gp=1.0,
                           alpha_per="sample", norm_per="batch", eps=1e-8, backend="cpu")
    assert seen == [container]
    got_grads = torch.autograd.grad(got, list(critic.parameters())[:3])
    torch.testing.assert_close(got, want, **F64)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, **F64)


def test_several_tensors_with_per_sample_norms_and_every_option():
    """The norm per group over all tensors together: the flattened gradients of each sample
    concatenated, as a code that cats its inputs before `grads.norm(2, dim=1)` has it."""
    torch.manual_seed(0)
    critic = ListCritic(13)
    real, fake = _several(b=6)
    a = torch.rand(3, dtype=torch.float64)
    w = torch.rand(3, dtype=torch.float64)
    xs = [(a.repeat_interleave(2).view(-1, *([1] * (r.dim() - 1))) * r
           + (1 - a.repeat_interleave(2).view(-1, *([1] * (r.dim() - 1)))) * f
           ).requires_grad_(True) for r, f in zip(real, fake)]
    out = critic(xs)
    grads = torch.autograd.grad(out, xs, torch.ones_like(out), create_graph=True)
    flat = torch.cat([g.reshape(3, -1) for g in grads], dim=1)
    n = torch.sqrt((flat * flat).sum(1) + 1e-3)
    want = 2.0 * (w * torch.clamp(n - 0.5, min=0) ** 2).sum()
    got, norms = gradient_penalty(critic, real, fake, lambda_gp=2.0, pac=2, alpha=a, eps=1e-3,
                                  target=0.5, kind="wgan-lp", weight=w, reduction="sum",
                                  return_norms=True, backend="cpu")
    torch.testing.assert_close(got, want, **F64)
    torch.testing.assert_close(norms, n, **F64)
    per_group = gradient_penalty(critic, real, fake, lambda_gp=2.0, pac=2, alpha=a, eps=1e-3,
                                 reduction="none", backend="cpu")
    torch.testing.assert_close(per_group, 2.0 * (n - 1) ** 2, **F64)


def test_several_tensors_second_order_by_gradgradcheck():
    real, fake = _several(b=4)
    a = torch.rand(4, dtype=torch.float64)
    w0 = torch.randn(13, dtype=torch.float64, requires_grad=True)

    def penalty(w):
        def critic(batch):
            x = torch.cat([t.reshape(t.shape[0], -1) for t in batch], dim=1)
            return torch.tanh(x * w).sum(1) + (x * w).pow(2).sum(1)
        return gradient_penalty(critic, real, fake, lambda_gp=2.0, alpha=a, norm_per=2,
                                backend="cpu")

    assert torch.autograd.gradcheck(penalty, (w0,))
    assert torch.autograd.gradgradcheck(penalty, (w0,))


def test_several_tensors_take_their_norms_from_the_fused_op():
    critic = ListCritic(13)
    real, fake = _several()
    fake = [f.requires_grad_(True) for f in fake]
    got = gradient_penalty(critic, real, fake, norm_per="batch", detach_inputs=False,
                           backend="cpu")
    names, stack, seen = [], [got.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(node_name(node))
        stack.extend(f for f, _ in node.next_functions)
    # one fused norm and one fused interpolation per tensor, no copy of them into one
    assert names.count(FUSED_GRAD_FN + "Backward") == 2, names
    assert names.count("wgangp_fast_interpolateBackward") == 2, names


@pytest.mark.parametrize("real,fake,options,error,match", [
    ("pair", "pair", {"pac": 2, "norm_per": "batch"}, ValueError, "pass pac .* or alpha_per"),
    ("pair", "pair", {"alpha_per": "group"}, ValueError, "alpha_per must be 'sample', 'batch'"),
    ("pair", "pair", {"norm_per": 4}, ValueError, r"\(N=6\) must be a multiple of norm_per=4"),
    ("pair", "pair", {"norm_per": 0}, ValueError, "norm_per must be at least 1"),
    ("pair", "pair", {"alpha_per": 1.5}, TypeError, "alpha_per must be"),
    ("list", "list", {"norm_dims": 1}, ValueError, "names axes of one tensor"),
    ("list", "pair", {}, ValueError, "real and fake must have the same layout"),
    ("list", "short", {}, ValueError, "real and fake must have the same layout"),
    ("empty", "empty", {}, TypeError, "an empty list"),
    ("ragged", "ragged", {}, ValueError, "share one batch size"),
], ids=lambda v: v if isinstance(v, str) and " " in v else None)
def test_group_and_layout_errors(real, fake, options, error, match):
    pair = _data((6, 4))
    several = _several()
    ragged = [torch.zeros(6, 2, dtype=torch.float64), torch.zeros(5, 2, dtype=torch.float64)]
    pick = {"pair": pair, "list": several, "empty": ([], []),
            "short": ([several[0][0]], [several[1][0]]), "ragged": (ragged, ragged)}
    r = pick[real][0]
    f = pick[fake][1]
    critic = ListCritic(13) if real != "pair" else Dense(4)
    with pytest.raises(error, match=match):
        gradient_penalty(critic, r, f, **options)
