"""docs/porting.md's recipes for other projects' penalty code: SDV (through ctgan), synthcity's
GAN, its dpgan under per-sample gradient hooks and its RadialGAN, torchgan's
WassersteinGradientPenalty, gretel's DGAN.

None of these packages is installed for the tests. Each original is a float64 transcription
written here from the original's formula (its alpha draw, its critic call, its norm and what it
returns, what it keeps the graph of), shaped like the client's class so the recipe runs as
written: a stand-in module under the client's import path holds it. Each script trains 24 seeded
steps as written and with the recipe; penalties must agree at every step to 1e-12 relative, and
the weights and random streams after the run must agree too.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from wgangp_fast.integrations import ctgan as wgf_ctgan
from wgangp_fast.integrations import get_handle, is_patched, patch_method, unpatch_method

from . import porting_doc as doc
from .test_first_call import Recorder
from .test_porting import STEPS, PackedDiscriminator, _assert_runs_agree, _final, run_packed

DT = torch.float64

pytestmark = pytest.mark.usefixtures("one_thread")


def _run_recipe(key: str, **names) -> dict:
    """Execute the row's recipe with the page's names and the given ones; its scope."""
    scope = {"torch": torch, "np": np, "patch_method": patch_method, "wgf_ctgan": wgf_ctgan,
             **doc.helpers(), **names}
    for code in doc.after(key):
        exec(compile(code, str(doc.DOC), "exec"), scope)
    return scope


def _unpatch(cls, name, *, checked=True):
    """Undo the recipe's patch; with checked, its first-call check must have passed."""
    if is_patched(cls, name):
        handle = get_handle(cls, name)
        unpatch_method(cls, name)
        assert handle.checked or not checked, f"{cls.__name__}.{name}'s first call unchecked"


# ---------------------------------------------------------------------------------------------
# SDV: its CTGANSynthesizer and CopulaGANSynthesizer train through ctgan's Discriminator, whose
# calc_gradient_penalty(self, real_data, fake_data, device='cpu', pac=10, lambda_=10) is CTGAN's
# formula; the recipe is wgf_ctgan.patch().
# ---------------------------------------------------------------------------------------------


class CtganDiscriminator(PackedDiscriminator):
    def calc_gradient_penalty(self, real_data, fake_data, device="cpu", pac=10, lambda_=10):
        return PackedDiscriminator.calc_gradient_penalty(self, real_data, fake_data, device, pac,
                                                         lambda_)


def test_sdv_synthesizers_through_ctgans_discriminator():
    want = run_packed(CtganDiscriminator, pac=10, batch=20)
    with doc.client_modules(ctgan__synthesizers__ctgan={"Discriminator": CtganDiscriminator}):
        _run_recipe("sdv")
        try:
            assert wgf_ctgan.is_patched() and wgf_ctgan.handle().cls is CtganDiscriminator
            got = run_packed(CtganDiscriminator, pac=10, batch=20)
            assert wgf_ctgan.handle().checked
        finally:
            wgf_ctgan.unpatch()
    _assert_runs_agree(got, want)


# ---------------------------------------------------------------------------------------------
# synthcity's GAN: alpha torch.rand([B, 1]) on the CPU moved to self.device, self.discriminator on
# the interpolates (squeezed), ones as grad_outputs, the norm per sample, lambda times the mean
# of (norm - 1)^2, the fake samples' graph kept. Its dpgan: the same method, the discriminator
# under per-sample gradient hooks that are off for the backward of the fake part and the penalty.
# ---------------------------------------------------------------------------------------------


class SynthcityGAN:
    def __init__(self, hooks=False):
        self.device = torch.device("cpu")
        self.lambda_gradient_penalty = 10.0
        self.discriminator = nn.Sequential(nn.Linear(5, 16), nn.LeakyReLU(0.2),
                                           nn.Linear(16, 1)).to(DT)
        self.generator = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 5)).to(DT)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=1e-3)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=1e-3)
        self.recorder = Recorder(self.discriminator) if hooks else None

    def _loss_gradient_penalty(self, real_samples, fake_samples, batch_size):
        a = torch.rand(batch_size, 1).to(self.device)
        x = (a * real_samples + (1 - a) * fake_samples).requires_grad_(True)
        scores = self.discriminator(x).squeeze()
        (g,) = torch.autograd.grad(scores, x, torch.ones(len(x), dtype=DT), create_graph=True)
        return self.lambda_gradient_penalty * ((g.reshape(len(x), -1).norm(2, dim=-1) - 1)
                                               ** 2).mean()

    def step(self, real):
        b = len(real)
        fake = self.generator(torch.randn(b, 3, dtype=DT))
        err_real = self.discriminator(real).squeeze().mean()
        err_fake = self.discriminator(fake.detach()).squeeze().mean()
        penalty = self._loss_gradient_penalty(real_samples=real, fake_samples=fake, batch_size=b)
        self.opt_d.zero_grad()
        penalty.backward(retain_graph=True)
        (err_fake - err_real).backward()
        self.opt_d.step()
        self.opt_g.zero_grad()
        (-self.discriminator(self.generator(torch.randn(b, 3, dtype=DT))).mean()).backward()
        self.opt_g.step()
        return penalty.item()


def run_synthcity(hooks=False):
    torch.manual_seed(23)
    np.random.seed(23)
    gan = SynthcityGAN(hooks=hooks)
    penalties = [gan.step(torch.randn(12, 5, dtype=DT) * 0.5 + 1) for _ in range(STEPS)]
    extra = {}
    if hooks:
        extra = {"counts": dict(gan.recorder.counts),
                 "grad_sample": [m.weight.grad_sample.clone() for m in gan.discriminator
                                 if isinstance(m, nn.Linear)]}
    return _final(penalties, gan.discriminator, gan.generator, **extra)


def test_synthcity_gan():
    want = run_synthcity()
    with doc.client_modules(synthcity__plugins__core__models__gan={"GAN": SynthcityGAN}):
        _run_recipe("synthcity")
    try:
        got = run_synthcity()
    finally:
        _unpatch(SynthcityGAN, "_loss_gradient_penalty")
    _assert_runs_agree(got, want)


def test_synthcity_gan_without_detach_inputs_false_is_named_by_the_check():
    (recipe,) = doc.after("synthcity")
    statement = recipe[recipe.index("patch_method("):]
    cut = re.sub(r"\s*detach_inputs=False,", "", statement)
    assert cut != statement
    exec(compile(cut, str(doc.DOC), "exec"), {"torch": torch, "patch_method": patch_method,
                                              "GAN": SynthcityGAN})
    try:
        with pytest.raises(RuntimeError, match=r"differentiable in fake.*Pass "
                                               r"detach_inputs=False"):
            run_synthcity()
    finally:
        _unpatch(SynthcityGAN, "_loss_gradient_penalty", checked=False)


def test_synthcity_dpgan_hooks_fire_and_accumulate_as_unpatched():
    want = run_synthcity(hooks=True)
    assert want["counts"]["backward 0"] > 0
    with doc.client_modules(synthcity__plugins__core__models__gan={"GAN": SynthcityGAN}):
        _run_recipe("dpgan")
    try:
        got = run_synthcity(hooks=True)
    finally:
        _unpatch(SynthcityGAN, "_loss_gradient_penalty")
    _assert_runs_agree(got, want)
    assert got["counts"] == want["counts"]
    for g, w in zip(got["grad_sample"], want["grad_sample"]):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# synthcity's RadialGAN: one discriminator per domain, the method told the domain; otherwise the
# GAN's formula, `[0, :]` of the scores for a batch of one.
# ---------------------------------------------------------------------------------------------


class RadialGAN:
    def __init__(self, domains=(0, 1)):
        self.device = torch.device("cpu")
        self.lambda_gradient_penalty = 10.0
        self.domains = domains
        self.discriminators = nn.ModuleList(
            nn.Sequential(nn.Linear(4, 12), nn.LeakyReLU(0.2), nn.Linear(12, 1)).to(DT)
            for _ in domains)
        self.generators = nn.ModuleList(nn.Linear(3, 4).to(DT) for _ in domains)
        self.opts = [torch.optim.Adam(d.parameters(), lr=1e-3) for d in self.discriminators]

    def _loss_gradient_penalty(self, domain, real_samples, fake_samples, batch_size):
        a = torch.rand(batch_size, 1).to(self.device)
        x = (a * real_samples + (1 - a) * fake_samples).requires_grad_(True)
        out = self.discriminators[domain](x)
        scores = out.squeeze() if batch_size > 1 else out[0, :]
        (g,) = torch.autograd.grad(scores, x, torch.ones(len(x), dtype=DT), create_graph=True)
        return self.lambda_gradient_penalty * ((g.reshape(len(x), -1).norm(2, dim=-1) - 1)
                                               ** 2).mean()

    def step(self, domain, real):
        b = len(real)
        penalties = []
        for other in self.domains:
            fake = self.generators[other](torch.randn(b, 3, dtype=DT))
            penalties.append(self._loss_gradient_penalty(domain=domain, real_samples=real,
                                                         fake_samples=fake, batch_size=b))
        penalty = torch.stack(penalties).mean()
        self.opts[domain].zero_grad()
        loss = penalty - self.discriminators[domain](real).mean()
        loss.backward()
        self.opts[domain].step()
        return penalty.item()


def run_radialgan():
    torch.manual_seed(29)
    np.random.seed(29)
    gan = RadialGAN()
    penalties = []
    for i in range(STEPS):
        domain = i % 2
        real = torch.randn(1 if i == 5 else 6, 4, dtype=DT) + domain
        penalties.append(gan.step(domain, real))
    return _final(penalties, gan.discriminators, gan.generators)


def test_radialgan_critic_per_domain():
    want = run_radialgan()
    with doc.client_modules(
            synthcity__plugins__domain_adaptation__plugin_radialgan={"RadialGAN": RadialGAN}):
        _run_recipe("radialgan")
    try:
        got = run_radialgan()
    finally:
        _unpatch(RadialGAN, "_loss_gradient_penalty")
    _assert_runs_agree(got, want)


# ---------------------------------------------------------------------------------------------
# torchgan's WassersteinGradientPenalty: train_ops draws one alpha for the batch as a Python
# number from torch.rand(1) on the CPU, interpolates real and the generator's output (its graph
# kept), the loss (||grad||_2 - 1)^2 over the whole gradient tensor, lambd times it backpropagated,
# the loss returned unscaled. The recipe is a subclass overriding train_ops.
# ---------------------------------------------------------------------------------------------


class WassersteinGradientPenalty:
    def __init__(self, lambd=10.0):
        self.lambd = lambd

    def forward(self, interpolate, d_interpolate):
        (g,) = torch.autograd.grad(d_interpolate, interpolate, torch.ones_like(d_interpolate),
                                   create_graph=True)
        return (g.norm(2) - 1) ** 2

    def train_ops(self, generator, discriminator, optimizer_discriminator, real_inputs, device,
                  labels=None):
        noise = torch.randn(real_inputs.size(0), generator.encoding_dims, device=device)
        optimizer_discriminator.zero_grad()
        fake = generator(noise)
        eps = torch.rand(1).item()
        interpolate = eps * real_inputs + (1 - eps) * fake
        loss = self.forward(interpolate, discriminator(interpolate))
        (self.lambd * loss).backward()
        optimizer_discriminator.step()
        return loss.item()


class TorchganGenerator(nn.Module):
    encoding_dims = 4

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 18), nn.Tanh())

    def forward(self, z):
        return self.net(z).view(-1, 2, 3, 3)


def run_torchgan(loss_cls):
    torch.manual_seed(31)
    np.random.seed(31)
    gen = TorchganGenerator().to(DT)
    disc = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ELU(), nn.Flatten(),
                         nn.Linear(36, 1)).to(DT)
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-3)
    opt_g = torch.optim.Adam(gen.parameters(), lr=1e-3)
    loss = loss_cls()
    penalties = []
    for _ in range(STEPS):
        real = torch.randn(8, 2, 3, 3, dtype=DT)
        penalties.append(loss.train_ops(gen, disc, opt_d, real, torch.device("cpu")))
        opt_g.zero_grad()
        (-disc(gen(torch.randn(8, 4, dtype=DT))).mean()).backward()
        opt_g.step()
    return _final(penalties, gen, disc)


@pytest.fixture
def float64_default():
    """torchgan's train_ops draws its noise in the default dtype, as the recipe does."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(DT)
    yield
    torch.set_default_dtype(before)


def test_torchgan_one_alpha_and_one_norm_for_the_batch(float64_default):
    want = run_torchgan(WassersteinGradientPenalty)
    with doc.client_modules(
            torchgan__losses={"WassersteinGradientPenalty": WassersteinGradientPenalty}):
        scope = _run_recipe("torchgan")
    fused = scope["FusedWassersteinGradientPenalty"]
    assert issubclass(fused, WassersteinGradientPenalty)
    got = run_torchgan(fused)
    _assert_runs_agree(got, want)


# ---------------------------------------------------------------------------------------------
# gretel's DGAN: lists of (attributes, additional attributes, features) with NaN-filled
# placeholders the penalty drops, one alpha per sample from torch.rand(B), each tensor
# interpolated as generated + alpha * (real - generated), the critic a bound method taking the
# list, one norm over every gradient of the whole batch with EPS = 1e-8 inside the square root,
# the mean of (norm - 1)^2 unscaled, the generator's graph kept.
# ---------------------------------------------------------------------------------------------


class DGAN:
    def __init__(self):
        self.device = "cpu"
        self.EPS = 1e-8
        self.feature_discriminator = nn.Sequential(nn.Linear(3 + 5 * 2, 16), nn.Tanh(),
                                                   nn.Linear(16, 1)).to(DT)
        self.generator = nn.Linear(4, 3 + 5 * 2).to(DT)
        self.opt_d = torch.optim.Adam(self.feature_discriminator.parameters(), lr=1e-3)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=1e-3)

    @staticmethod
    def _kept(batch):
        return [t for t in batch if not torch.isnan(t).any()]

    def _discriminate(self, batch):
        parts = self._kept(batch)
        return self.feature_discriminator(torch.cat([t.reshape(len(t), -1) for t in parts], 1))

    def _generate(self, b):
        out = self.generator(torch.randn(b, 4, dtype=DT))
        placeholder = torch.full((b, 1), float("nan"), dtype=DT)
        return [placeholder, out[:, :3], out[:, 3:].reshape(b, 5, 2)]

    def _get_gradient_penalty(self, generated_batch, real_batch, discriminator_func):
        generated, real = self._kept(generated_batch), self._kept(real_batch)
        alpha = torch.rand(generated[0].shape[0], device=self.device)
        xs = [(g + alpha.view(-1, *([1] * (g.dim() - 1))) * (r - g)).requires_grad_(True)
              for g, r in zip(generated, real)]
        out = discriminator_func(xs)
        grads = torch.autograd.grad(out, xs, torch.ones(out.shape, dtype=DT), create_graph=True)
        norm = torch.sqrt(sum((g.reshape(len(g), -1) ** 2).sum() for g in grads) + self.EPS)
        return ((norm - 1.0) ** 2).mean()

    def step(self, real_batch):
        generated = self._generate(len(real_batch[0]))
        self.opt_d.zero_grad()
        penalty = self._get_gradient_penalty(generated, real_batch, self._discriminate)
        loss = (self._discriminate(generated).mean() - self._discriminate(real_batch).mean()
                + 10.0 * penalty)
        loss.backward(retain_graph=True)
        self.opt_d.step()
        self.opt_g.zero_grad(set_to_none=False)
        (-self._discriminate(generated).mean()).backward()
        self.opt_g.step()
        return penalty.item()


def run_dgan():
    torch.manual_seed(37)
    np.random.seed(37)
    gan = DGAN()
    penalties = []
    for _ in range(STEPS):
        b = 10
        real = [torch.full((b, 1), float("nan"), dtype=DT), torch.rand(b, 3, dtype=DT),
                torch.rand(b, 5, 2, dtype=DT)]
        penalties.append(gan.step(real))
    return _final(penalties, gan.feature_discriminator, gan.generator)


def test_dgan_several_tensors_one_norm_over_the_batch():
    want = run_dgan()
    with doc.client_modules(gretel_synthetics__timeseries_dgan__dgan={"DGAN": DGAN}):
        _run_recipe("dgan")
    try:
        got = run_dgan()
    finally:
        _unpatch(DGAN, "_get_gradient_penalty")
    _assert_runs_agree(got, want)
