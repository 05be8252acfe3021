"""The first-call check of a patched method leaves no trace: the original runs once, for real,
and wgangp_fast's watching hooks are gone afterwards. A critic whose hooks count calls and
accumulate per-sample gradients into its parameters (as Opacus does) gives the unpatched run's
counts, per-sample gradients, penalties and weights with the check on. The check's other
findings (a critic the original does not differentiate, other critic arguments, other weights
on the scores, other points, a mismatched detach_inputs) are named."""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

from wgangp_fast.integrations import (
    is_patched,
    patch_method,
    unpatch_method,
)

from ..cases import FUSED_GRAD_FN, node_name

DT = torch.float64
F64 = {"rtol": 1e-12, "atol": 1e-14}

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------
# A critic with hooks that count and accumulate, and a GAN whose penalty method uses it
# ---------------------------------------------------------------------------------------------


class Recorder:
    """Forward pre-hooks, forward hooks and full backward hooks that count per module, and an
    Opacus-like pair that keeps each Linear's input and, on the backward, adds the per-sample
    weight gradient (grad_output outer input) into `weight.grad_sample`."""

    def __init__(self, critic: nn.Module):
        self.counts: Counter = Counter()
        self.handles = []
        for name, module in critic.named_modules():
            self.handles += [
                module.register_forward_pre_hook(self._count(f"pre {name}")),
                module.register_forward_hook(self._count(f"forward {name}")),
                module.register_full_backward_hook(self._count(f"backward {name}")),
            ]
            if isinstance(module, nn.Linear):
                self.handles += [module.register_forward_hook(self._keep_input),
                                 module.register_full_backward_hook(self._per_sample)]

    def _count(self, key):
        def hook(*args):
            self.counts[key] += 1
        return hook

    @staticmethod
    def _keep_input(module, args, out):
        module.activations = getattr(module, "activations", []) + [args[0].detach()]

    @staticmethod
    def _per_sample(module, grad_input, grad_output):
        # the double backward of the penalty passes the critic's forward graph again, after
        # its activation was used: take the last one then, the same in every run
        x = module.activations.pop() if module.activations else module.last_activation
        module.last_activation = x
        g = torch.einsum("ni,nj->nij", grad_output[0].detach(), x)
        w = module.weight
        w.grad_sample = g if getattr(w, "grad_sample", None) is None else w.grad_sample + g


class HookedGAN:
    """A tabular WGAN-GP whose penalty method keeps the graph of fake (no .data), as synthcity's
    GAN does, and whose critic carries the Recorder's hooks."""

    def __init__(self, seed=0):
        torch.manual_seed(seed)
        self.D = nn.Sequential(nn.Linear(4, 12), nn.Tanh(), nn.Linear(12, 1)).to(DT)
        self.G = nn.Sequential(nn.Linear(3, 12), nn.Tanh(), nn.Linear(12, 4)).to(DT)
        self.opt_d = torch.optim.SGD(self.D.parameters(), lr=0.05)
        self.recorder = Recorder(self.D)

    def gp(self, real, fake):
        alpha = torch.rand(real.shape[0], 1)
        x = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        out = self.D(x)
        (g,) = torch.autograd.grad(out, x, torch.ones_like(out), create_graph=True)
        return ((g.norm(2, dim=1) - 1) ** 2).mean()

    def step(self, real):
        fake = self.G(torch.randn(real.shape[0], 3, dtype=DT)).detach()
        self.opt_d.zero_grad()
        pen = self.gp(real, fake)
        loss = self.D(fake).mean() - self.D(real).mean() + 10 * pen
        loss.backward()
        self.opt_d.step()
        return pen.item()


def _run_hooked(steps=4):
    gan = HookedGAN()
    torch.manual_seed(1)
    penalties = [gan.step(torch.randn(8, 4, dtype=DT)) for _ in range(steps)]
    return {"penalties": penalties, "counts": dict(gan.recorder.counts),
            "grad_sample": [m.weight.grad_sample.clone() for m in gan.D
                            if isinstance(m, nn.Linear)],
            "weights": [p.detach().clone() for p in gan.D.parameters()],
            "hooks": [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in gan.D.modules()],
            "after": torch.rand(2)}


@pytest.fixture(autouse=True)
def _clean():
    yield
    for cls, name in ((HookedGAN, "gp"), (Detaching, "calc_gradient_penalty"),
                      (Watched, "gp"), (ByArgument, "gp"), (ByAttribute, "gp")):
        if is_patched(cls, name):
            unpatch_method(cls, name)


@pytest.mark.parametrize("verify", [True, False])
def test_hooks_fire_and_accumulate_as_with_the_original(verify):
    want = _run_hooked()
    handle = patch_method(HookedGAN, "gp", critic="self.D", lambda_gp=1.0, detach_inputs=False,
                          verify=verify)
    got = _run_hooked()
    assert handle.checked is verify
    assert got["counts"] == want["counts"]
    assert got["counts"]["pre "] == 4 * 3 and got["counts"]["backward 0"] >= 4
    assert got["hooks"] == want["hooks"], "the check's own hooks must be gone"
    np.testing.assert_allclose(got["penalties"], want["penalties"], rtol=1e-12)
    for g, w in zip(got["grad_sample"], want["grad_sample"]):
        torch.testing.assert_close(g, w, **F64)
    for g, w in zip(got["weights"], want["weights"]):
        torch.testing.assert_close(g, w, **F64)
    assert torch.equal(got["after"], want["after"])


def test_the_first_call_returns_the_fused_penalty_of_the_originals_gradient():
    gan = HookedGAN()
    real, fake = torch.randn(8, 4, dtype=DT), torch.randn(8, 4, dtype=DT)
    torch.manual_seed(2)
    want = gan.gp(real, fake)
    patch_method(HookedGAN, "gp", critic="self.D", lambda_gp=1.0)
    torch.manual_seed(2)
    got = gan.gp(real, fake)
    assert FUSED_GRAD_FN in node_name(got.grad_fn)
    torch.testing.assert_close(got, want, **F64)
    (g_got,) = torch.autograd.grad(got, gan.D[0].weight)
    (g_want,) = torch.autograd.grad(want, gan.D[0].weight)
    torch.testing.assert_close(g_got, g_want, **F64)


# ---------------------------------------------------------------------------------------------
# detach_inputs: what the original's penalty is differentiable in
# ---------------------------------------------------------------------------------------------


def _pair_with_graph(n=8):
    gen = nn.Linear(3, 4).to(DT)
    return torch.randn(n, 4, dtype=DT), gen(torch.randn(n, 3, dtype=DT))


def test_a_detach_mismatch_names_the_matching_option():
    gan = HookedGAN()
    real, fake = _pair_with_graph()
    patch_method(HookedGAN, "gp", critic="self.D", lambda_gp=1.0)
    with pytest.raises(RuntimeError, match=r"differentiable in fake, the patched one would be "
                                           r"differentiable in neither.*detach_inputs=False"):
        gan.gp(real, fake)
    unpatch_method(HookedGAN, "gp")
    handle = patch_method(HookedGAN, "gp", critic="self.D", lambda_gp=1.0, detach_inputs=False)
    gan.gp(real, fake)
    assert handle.checked


class Detaching(nn.Module):
    """CTGAN's signature, but the interpolation uses .data: the penalty never reaches fake."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).to(DT)

    def forward(self, x):
        return self.net(x)

    def calc_gradient_penalty(self, real_data, fake_data, device="cpu", pac=1, lambda_=10):
        alpha = torch.rand(real_data.size(0) // pac, 1, 1, device=device).view(-1, 1).to(DT)
        x = (alpha * real_data.data + (1 - alpha) * fake_data.data).requires_grad_(True)
        out = self(x)
        (g,) = torch.autograd.grad(out, x, torch.ones_like(out), create_graph=True)
        return lambda_ * ((g.norm(2, dim=1) - 1) ** 2).mean()


def test_ctgan_signature_on_a_detaching_method_suggests_a_patch_that_works():
    real, fake = _pair_with_graph()
    critic = Detaching()
    patch_method(Detaching)
    with pytest.raises(RuntimeError, match=r"detaches real and fake") as caught:
        critic.calc_gradient_penalty(real, fake)
    unpatch_method(Detaching)
    suggested = caught.value.args[0].split("default: ")[1]
    assert suggested.startswith("patch_method(Detaching, 'calc_gradient_penalty'")
    handle = eval(suggested, {"patch_method": patch_method, "Detaching": Detaching})
    torch.manual_seed(4)
    got = critic.calc_gradient_penalty(real, fake)
    assert handle.checked
    unpatch_method(Detaching)
    torch.manual_seed(4)
    torch.testing.assert_close(got, critic.calc_gradient_penalty(real, fake), **F64)


def test_no_detach_setting_matches_an_original_that_keeps_only_one_graph():
    class KeepsFake:
        def __init__(self):
            self.D = nn.Sequential(nn.Linear(4, 1), nn.Tanh()).to(DT)

        def gp(self, real, fake):
            a = torch.rand(real.shape[0], 1)
            x = a * real.detach() + (1 - a) * fake
            out = self.D(x)
            (g,) = torch.autograd.grad(out, x, torch.ones_like(out), create_graph=True)
            return ((g.norm(2, dim=1) - 1) ** 2).mean()

    gen = nn.Linear(3, 4).to(DT)
    real, fake = gen(torch.randn(6, 3, dtype=DT)), gen(torch.randn(6, 3, dtype=DT))
    patch_method(KeepsFake, "gp", critic="self.D", lambda_gp=1.0, detach_inputs=False)
    try:
        with pytest.raises(RuntimeError, match="no detach_inputs matches: the original keeps "
                                               "the graph of fake but not of real"):
            KeepsFake().gp(real, fake)
    finally:
        unpatch_method(KeepsFake, "gp")


# ---------------------------------------------------------------------------------------------
# The other findings, each named
# ---------------------------------------------------------------------------------------------


class Watched:
    def __init__(self, how):
        torch.manual_seed(0)
        self.D = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).to(DT)
        self.other = nn.Linear(4, 1).to(DT)
        self.how = how

    def gp(self, real, fake, labels):
        if self.how == "numpy":
            a = torch.from_numpy(np.random.random((real.shape[0], 1)))
        else:
            a = torch.rand(real.shape[0], 1)
        x = (a * real + (1 - a) * fake).requires_grad_(True)
        out = self.D(x)
        weights = torch.full_like(out, 1 / out.shape[0]) if self.how == "mean" else \
            torch.ones_like(out)
        (g,) = torch.autograd.grad(out, x, weights, create_graph=True)
        return ((g.norm(2, dim=1) - 1) ** 2).mean()


@pytest.mark.parametrize("how,options,match", [
    ("plain", {"critic": "self.other"}, r"never took the gradient of critic='self.other'"),
    ("plain", {"critic": "self.D", "inputs": ("labels",)},
     r"called critic='self.D' with the points, the patch would call it with the points, 1 more"),
    ("mean", {"critic": "self.D"}, r"scores weighted by \[0.125"),
    ("numpy", {"critic": "self.D"}, r"points the original passed to critic='self.D' differ.*"
                                    r"alpha_fn"),
    ("plain", {"critic": "self.D", "real": "fake", "fake": "real"}, r"points .* differ"),
    ("plain", {"critic": "self.D", "lambda_gp": 2.0}, r"result differs.*Check lambda_gp"),
], ids=["wrong-critic", "extra-input", "mean-weights", "numpy-alpha", "swapped", "lambda"])
def test_the_check_names_what_does_not_fit(how, options, match):
    options = {"lambda_gp": 1.0, **options}
    real, fake = torch.randn(8, 4, dtype=DT), torch.randn(8, 4, dtype=DT)
    labels = torch.zeros(8, 4, dtype=DT)
    handle = patch_method(Watched, "gp", **options)
    with pytest.raises(RuntimeError, match=match):
        Watched(how).gp(real, fake, labels)
    assert not handle.verified


class ByArgument:
    """A penalty method that takes its critic as a function argument (gretel's DGAN passes a
    bound method that concatenates the inputs for the discriminator module)."""

    def __init__(self):
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).to(DT)
        self.recorder = Recorder(self.net)

    def discriminate(self, x):
        return self.net(x)

    def gp(self, real, fake, discriminator_func):
        a = torch.rand(real.shape[0], 1)
        x = (a * real + (1 - a) * fake).requires_grad_(True)
        out = discriminator_func(x)
        (g,) = torch.autograd.grad(out, x, torch.ones_like(out), create_graph=True)
        return ((g.norm(2, dim=1) - 1) ** 2).mean()


def test_a_critic_passed_as_an_argument_is_watched_through_a_wrapper():
    real, fake = torch.randn(8, 4, dtype=DT), torch.randn(8, 4, dtype=DT)
    obj = ByArgument()
    torch.manual_seed(3)
    want = obj.gp(real, fake, obj.discriminate)
    counts = dict(obj.recorder.counts)
    obj.recorder.counts.clear()
    handle = patch_method(ByArgument, "gp", critic="discriminator_func", lambda_gp=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.manual_seed(3)
        got = obj.gp(real, fake, obj.discriminate)
    assert handle.checked and dict(obj.recorder.counts) == counts
    torch.testing.assert_close(got, want, **F64)


class ByAttribute(ByArgument):
    def gp(self, real, fake):
        return super().gp(real, fake, self.discriminate)


def test_a_critic_that_cannot_be_watched_is_reported_and_the_original_result_kept():
    real, fake = torch.randn(8, 4, dtype=DT), torch.randn(8, 4, dtype=DT)
    obj = ByAttribute()
    torch.manual_seed(3)
    want = obj.gp(real, fake)
    handle = patch_method(ByAttribute, "gp", critic="self.discriminate", lambda_gp=1.0)
    torch.manual_seed(3)
    with pytest.warns(RuntimeWarning, match="could not check.*is a method, not an nn.Module"):
        first = obj.gp(real, fake)
    assert handle.verified and not handle.checked
    assert torch.equal(first, want)
    torch.manual_seed(3)
    torch.testing.assert_close(obj.gp(real, fake), want, **F64)
