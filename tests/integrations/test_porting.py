"""Porting the WGAN-GP code people run: each pattern is a small training script written in that
style (function- or method-style penalty, lambda 0.1, alpha drawn on the CPU or with numpy, a
conditional critic, a norm over one axis of 3-D data, norms logged or returned, a packed critic
with a device argument), run seeded for 24 steps in float64 twice: as written, and with the
recipe docs/porting.md gives, read from the page and run as written. The penalty must agree at
every step to 1e-12 relative, and the weights, the logs and the random streams after the run must
agree too. The recipes for other projects' code (SDV, synthcity, torchgan, gretel's DGAN) are in
test_porting_clients.py, the page's tables of alpha draws and groups in test_porting_tables.py.
"""

from __future__ import annotations

import contextlib
import re
from collections import defaultdict

import numpy as np
import pytest
import torch
from torch import nn

from wgangp_fast.integrations import (
    drop_in_penalty,
    is_patched,
    patch_method,
    patched_method,
    unpatch_method,
)

from . import porting_doc as doc

STEPS = 24
DT = torch.float64
PENALTY_RTOL = 1e-12


pytestmark = pytest.mark.usefixtures("one_thread")


def _cpu_then_move(m, like):
    """alpha drawn on the CPU RNG, then moved: `torch.rand(B, 1).expand(...).to(device)`."""
    return torch.rand(m, 1).to(like.device)


def _assert_runs_agree(got, want, *, weights_rtol=1e-9):
    assert len(want["penalties"]) >= 20 and len(got["penalties"]) == len(want["penalties"])
    g, w = torch.tensor(got["penalties"], dtype=DT), torch.tensor(want["penalties"], dtype=DT)
    rel = ((g - w).abs() / w.abs()).max().item()
    assert rel <= PENALTY_RTOL, f"penalties differ by {rel:.2e} relative (per step {g} vs {w})"
    assert len(set(w.tolist())) == len(w), "the penalty should change from step to step"
    for name in want["weights"]:
        torch.testing.assert_close(got["weights"][name], want["weights"][name],
                                   rtol=weights_rtol, atol=1e-12, msg=name)
    assert got["after"] == want["after"], "the run consumed the random streams differently"


# ---------------------------------------------------------------------------------------------
# docs/porting.md's recipes, as written
# ---------------------------------------------------------------------------------------------

PORTING = doc.table(doc.PORTING_HEADER)
_after = doc.after


def test_every_porting_row_is_run():
    claimed = [k for r in PORTING for p, k in doc.PORTING_ROWS.items() if p in r[0]]
    assert len(claimed) == len(PORTING) and set(claimed) == set(doc.PORTING_ROWS.values()), (
        "each row of docs/porting.md's porting tables needs its script (porting_doc.PORTING_ROWS)")


def test_runnable_blocks_run_as_written():
    """Every python block not marked notest runs on its own, in a fresh namespace."""
    runnable = re.findall(r"```python\n(.*?)```", doc.text(), flags=re.S)
    assert len(runnable) >= 2
    for block in runnable:
        exec(compile(block, str(doc.DOC), "exec"), {"__name__": "porting_doc_block"})


def test_no_table_cell_is_wider_than_150_characters():
    wide = [c for t in doc.tables() for r in t for c in r if len(c) > 150]
    assert not wide, wide


_NAMES = {"torch": torch, "np": np, "drop_in_penalty": drop_in_penalty,
          "patch_method": patch_method}


def _names(**names):
    return {**_NAMES, **doc.helpers(), **names}


def _doc_penalty(statement: str, **names):
    """The page's `gp = ...` as a penalty function of (critic, real, fake, labels)."""
    code = compile(statement, str(doc.DOC), "exec")

    def penalty(critic, real, fake, labels=None):
        scope = {**_names(**names), "netD": critic, "D": critic, "real": real, "fake": fake,
                 "labels": labels, "device": real.device}
        exec(code, scope)
        return scope["gp"]

    return penalty


@contextlib.contextmanager
def _doc_patch(statement: str, cls: type, name: str, **names):
    """The page's `patch_method(...)` with its class names bound, undone after the block."""
    assert not is_patched(cls, name)
    exec(compile(statement, str(doc.DOC), "exec"), _names(**names))
    assert is_patched(cls, name), f"{statement!r} did not patch {cls.__qualname__}.{name}"
    try:
        yield
    finally:
        unpatch_method(cls, name)


def _final(penalties, *modules, **extra):
    weights = {f"{i}.{k}": v.detach().clone() for i, m in enumerate(modules)
               for k, v in m.state_dict().items()}
    after = (torch.rand(2).tolist(), np.random.random(2).tolist())
    return {"penalties": penalties, "weights": weights, "after": after, **extra}


# ---------------------------------------------------------------------------------------------
# 1. A toy-data script: function-style penalty, LAMBDA = 0.1, alpha drawn on the CPU and moved,
#    the caller passing `.data`.
# ---------------------------------------------------------------------------------------------

LAMBDA_TOY = 0.1
BATCH_TOY = 16


def toy_calc_gradient_penalty(netD, real_data, fake_data):
    alpha = torch.rand(BATCH_TOY, 1)
    alpha = alpha.expand(real_data.size())
    alpha = alpha.to(real_data.device)
    interpolates = alpha * real_data + ((1 - alpha) * fake_data)
    interpolates.requires_grad_(True)
    disc_interpolates = netD(interpolates)
    gradients = torch.autograd.grad(outputs=disc_interpolates, inputs=interpolates,
                                    grad_outputs=torch.ones(disc_interpolates.size()),
                                    create_graph=True, retain_graph=True, only_inputs=True)[0]
    gradient_penalty = ((gradients.norm(2, dim=1) - 1) ** 2).mean() * LAMBDA_TOY
    return gradient_penalty


def run_toy(calc_gradient_penalty):
    torch.manual_seed(3)
    np.random.seed(3)
    netG = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2)).to(DT)
    netD = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 1)).to(DT)
    optD = torch.optim.Adam(netD.parameters(), lr=1e-3, betas=(0.5, 0.9))
    optG = torch.optim.Adam(netG.parameters(), lr=1e-3, betas=(0.5, 0.9))
    centers = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]], dtype=DT) * 2
    penalties = []
    for _ in range(STEPS):
        for _ in range(2):
            idx = torch.from_numpy(np.random.randint(0, 4, BATCH_TOY))
            real_data = centers[idx] + 0.02 * torch.randn(BATCH_TOY, 2, dtype=DT)
            netD.zero_grad()
            D_real = netD(real_data).mean()
            fake = netG(torch.randn(BATCH_TOY, 2, dtype=DT))
            D_fake = netD(fake.data).mean()
            gradient_penalty = calc_gradient_penalty(netD, real_data.data, fake.data)
            D_cost = D_fake - D_real + gradient_penalty
            D_cost.backward()
            optD.step()
            penalties.append(gradient_penalty.item())
        netG.zero_grad()
        G_cost = -netD(netG(torch.randn(BATCH_TOY, 2, dtype=DT))).mean()
        G_cost.backward()
        optG.step()
    return _final(penalties, netG, netD)


def test_toy_script_with_lambda_one_tenth_and_cpu_drawn_alpha():
    want = run_toy(toy_calc_gradient_penalty)
    for statement in _after("toy"):
        got = run_toy(_doc_penalty(statement, LAMBDA=LAMBDA_TOY))
        _assert_runs_agree(got, want)


# ---------------------------------------------------------------------------------------------
# 2. An image script: numpy-drawn alpha, a ones tensor as grad_outputs, the caller scaling the
#    unscaled penalty by lambda_gp. 3. The same with a conditional critic D(img, labels).
# ---------------------------------------------------------------------------------------------

Tensor = torch.DoubleTensor
LAMBDA_GP = 10
IMG = (1, 8, 8)


class ImageCritic(nn.Module):
    """A small conv critic. `act` smooth (ELU): its input Hessian is not zero, so the penalty
    has a gradient with respect to the critic's input and detaching it or not shows."""

    def __init__(self, n_classes=0, act=None):
        super().__init__()
        self.label_emb = nn.Embedding(n_classes, int(np.prod(IMG))) if n_classes else None
        act = act or (lambda: nn.LeakyReLU(0.2))
        self.model = nn.Sequential(
            nn.Conv2d(IMG[0], 4, 3, 2, 1), act(),
            nn.Conv2d(4, 8, 3, 2, 1), act(), nn.Flatten(), nn.Linear(8 * 2 * 2, 1))

    def forward(self, img, labels=None):
        if self.label_emb is not None:
            img = img * self.label_emb(labels).view(img.shape)
        return self.model(img)


class ImageGenerator(nn.Module):
    def __init__(self, latent=6, n_classes=0):
        super().__init__()
        self.label_emb = nn.Embedding(n_classes, latent) if n_classes else None
        self.model = nn.Sequential(nn.Linear(latent, 32), nn.LeakyReLU(0.2),
                                   nn.Linear(32, int(np.prod(IMG))), nn.Tanh())

    def forward(self, z, labels=None):
        if self.label_emb is not None:
            z = z * self.label_emb(labels)
        return self.model(z).view(z.shape[0], *IMG)


def compute_gradient_penalty(D, real_samples, fake_samples):
    alpha = Tensor(np.random.random((real_samples.size(0), 1, 1, 1)))
    interpolates = (alpha * real_samples + ((1 - alpha) * fake_samples)).requires_grad_(True)
    d_interpolates = D(interpolates)
    fake = Tensor(real_samples.shape[0], 1).fill_(1.0)
    gradients = torch.autograd.grad(outputs=d_interpolates, inputs=interpolates,
                                    grad_outputs=fake, create_graph=True, retain_graph=True,
                                    only_inputs=True)[0]
    gradients = gradients.view(gradients.size(0), -1)
    return ((gradients.norm(2, dim=1) - 1) ** 2).mean()


def compute_conditional_gradient_penalty(D, real_samples, fake_samples, labels, device):
    alpha = torch.rand(real_samples.size(0), 1, 1, 1, device=device)
    interpolates = (alpha * real_samples + ((1 - alpha) * fake_samples)).requires_grad_(True)
    d_interpolates = D(interpolates, labels)
    gradients = torch.autograd.grad(outputs=d_interpolates, inputs=interpolates,
                                    grad_outputs=torch.ones_like(d_interpolates),
                                    create_graph=True, retain_graph=True)[0]
    gradients = gradients.view(gradients.size(0), -1)
    return ((gradients.norm(2, dim=1) - 1) ** 2).mean()


def run_images(gradient_penalty_of, n_classes=0, batch=8):
    torch.manual_seed(5)
    np.random.seed(5)
    generator = ImageGenerator(n_classes=n_classes).to(DT)
    discriminator = ImageCritic(n_classes=n_classes).to(DT)
    opt_G = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_D = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    penalties = []
    for i in range(STEPS):
        real_imgs = torch.tanh(torch.randn(batch, *IMG, dtype=DT))
        labels = torch.from_numpy(np.random.randint(0, max(n_classes, 1), batch))
        z = Tensor(np.random.normal(0, 1, (batch, 6)))
        opt_D.zero_grad()
        fake_imgs = generator(z, labels if n_classes else None)
        extra = (labels,) if n_classes else ()
        real_validity = discriminator(real_imgs, *extra)
        fake_validity = discriminator(fake_imgs, *extra)
        gradient_penalty = gradient_penalty_of(discriminator, real_imgs.data, fake_imgs.data,
                                               labels)
        d_loss = -torch.mean(real_validity) + torch.mean(fake_validity) + LAMBDA_GP * gradient_penalty
        d_loss.backward()
        opt_D.step()
        penalties.append(gradient_penalty.item())
        opt_G.zero_grad()
        if i % 2 == 0:
            g_loss = -torch.mean(discriminator(generator(z, labels if n_classes else None), *extra))
            g_loss.backward()
            opt_G.step()
    return _final(penalties, generator, discriminator)


def test_image_script_with_numpy_alpha_and_caller_side_lambda():
    want = run_images(lambda D, r, f, labels: compute_gradient_penalty(D, r, f))
    for statement in _after("images"):
        got = run_images(_doc_penalty(statement))
        _assert_runs_agree(got, want)


def test_conditional_critic_with_labels():
    device = torch.device("cpu")
    want = run_images(lambda D, r, f, labels: compute_conditional_gradient_penalty(
        D, r, f, labels, device), n_classes=3)
    statements = _after("conditional")
    assert any("labels=labels" in s for s in statements)  # positional and by keyword
    for statement in statements:
        got = run_images(_doc_penalty(statement), n_classes=3)
        _assert_runs_agree(got, want)


# ---------------------------------------------------------------------------------------------
# 4. A character-level language model: [B, SEQ_LEN, VOCAB] softmax data, the norm over axis 1
#    only (no flattening), alpha drawn on the CPU as [B, 1, 1] and expanded.
# ---------------------------------------------------------------------------------------------

SEQ_LEN, VOCAB, BATCH_LM, LAMBDA_LM = 6, 5, 8, 10


class CharCritic(nn.Module):
    def __init__(self, dim=8):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(VOCAB, dim, 3, padding=1), nn.ReLU(),
                                  nn.Conv1d(dim, dim, 3, padding=1))
        self.linear = nn.Linear(SEQ_LEN * dim, 1)

    def forward(self, x):
        h = self.conv(x.transpose(1, 2))
        return self.linear(h.reshape(x.shape[0], -1))


class CharGenerator(nn.Module):
    def __init__(self, latent=8):
        super().__init__()
        self.fc = nn.Linear(latent, SEQ_LEN * VOCAB)

    def forward(self, z):
        return torch.softmax(self.fc(z).view(-1, SEQ_LEN, VOCAB), dim=2)


def lm_calc_gradient_penalty(netD, real_data, fake_data):
    alpha = torch.rand(BATCH_LM, 1, 1)
    alpha = alpha.expand(real_data.size()).to(real_data.device)
    interpolates = alpha * real_data + ((1 - alpha) * fake_data)
    interpolates.requires_grad_(True)
    disc_interpolates = netD(interpolates)
    gradients = torch.autograd.grad(outputs=disc_interpolates, inputs=interpolates,
                                    grad_outputs=torch.ones(disc_interpolates.size(), dtype=DT),
                                    create_graph=True, retain_graph=True, only_inputs=True)[0]
    return ((gradients.norm(2, dim=1) - 1) ** 2).mean() * LAMBDA_LM


def run_lm(calc_gradient_penalty):
    torch.manual_seed(7)
    np.random.seed(7)
    netG, netD = CharGenerator().to(DT), CharCritic().to(DT)
    optD = torch.optim.Adam(netD.parameters(), lr=1e-4, betas=(0.5, 0.9))
    optG = torch.optim.Adam(netG.parameters(), lr=1e-4, betas=(0.5, 0.9))
    corpus = torch.from_numpy(np.random.randint(0, VOCAB, (64, SEQ_LEN)))
    penalties = []
    for _ in range(STEPS):
        rows = torch.from_numpy(np.random.randint(0, 64, BATCH_LM))
        real_data = nn.functional.one_hot(corpus[rows], VOCAB).to(DT)
        netD.zero_grad()
        fake = netG(torch.randn(BATCH_LM, 8, dtype=DT))
        gradient_penalty = calc_gradient_penalty(netD, real_data, fake.data)
        D_cost = netD(fake.data).mean() - netD(real_data).mean() + gradient_penalty
        D_cost.backward()
        optD.step()
        penalties.append(gradient_penalty.item())
        netG.zero_grad()
        (-netD(netG(torch.randn(BATCH_LM, 8, dtype=DT))).mean()).backward()
        optG.step()
    return _final(penalties, netG, netD)


def test_language_model_with_the_norm_over_one_axis():
    want = run_lm(lm_calc_gradient_penalty)
    for statement in _after("lm"):
        got = run_lm(_doc_penalty(statement, LAMBDA=LAMBDA_LM))
        _assert_runs_agree(got, want)
    with pytest.warns(UserWarning, match="norm_dims=1"):
        every_axis = run_lm(lambda netD, real, fake: drop_in_penalty(
            netD, real, fake, lambda_gp=LAMBDA_LM, alpha_fn=_cpu_then_move))
    assert every_axis["penalties"][0] != pytest.approx(want["penalties"][0], rel=1e-3)


# ---------------------------------------------------------------------------------------------
# 5. An image script that draws alpha as the full image shape (flat, expanded, made contiguous
#    and viewed as [B, C, H, W]) on the CPU: B values drawn, as the page's cpu_alpha draws.
# ---------------------------------------------------------------------------------------------

def full_shape_calc_gradient_penalty(netD, real_data, fake_data):
    batch = real_data.size(0)
    alpha = torch.rand(batch, 1)
    alpha = alpha.expand(batch, real_data.nelement() // batch).contiguous().view(real_data.shape)
    alpha = alpha.to(real_data.device)
    interpolates = (alpha * real_data + ((1 - alpha) * fake_data)).requires_grad_(True)
    disc_interpolates = netD(interpolates)
    gradients = torch.autograd.grad(outputs=disc_interpolates, inputs=interpolates,
                                    grad_outputs=torch.ones_like(disc_interpolates),
                                    create_graph=True, retain_graph=True, only_inputs=True)[0]
    gradients = gradients.view(gradients.size(0), -1)
    return ((gradients.norm(2, dim=1) - 1) ** 2).mean() * LAMBDA_GP


def test_full_shape_alpha_drawn_on_the_cpu():
    want = run_images(lambda D, r, f, labels: full_shape_calc_gradient_penalty(D, r, f) / LAMBDA_GP)
    for statement in _after("full_shape"):
        penalty = _doc_penalty(statement, LAMBDA=LAMBDA_GP)
        got = run_images(lambda D, r, f, labels, p=penalty: p(D, r, f) / LAMBDA_GP)
        _assert_runs_agree(got, want)


# ---------------------------------------------------------------------------------------------
# 6. A trainer class: the penalty a method of it, the critic self.D, lambda self.gp_weight,
#    `.data` inside, sqrt(sum + 1e-12), the gradient norm logged into self.losses, the generated
#    batch passed in with its graph.
# ---------------------------------------------------------------------------------------------

class Trainer:
    def __init__(self, generator, discriminator, gen_optimizer, dis_optimizer, gp_weight=10,
                 critic_iterations=2):
        self.G, self.G_opt = generator, gen_optimizer
        self.D, self.D_opt = discriminator, dis_optimizer
        self.losses = {"G": [], "D": [], "GP": [], "gradient_norm": []}
        self.num_steps = 0
        self.gp_weight = gp_weight
        self.critic_iterations = critic_iterations
        self.generator_grads = []

    def _critic_train_iteration(self, data):
        batch_size = data.size()[0]
        generated_data = self.sample_generator(batch_size)
        d_real = self.D(data)
        d_generated = self.D(generated_data)
        gradient_penalty = self._gradient_penalty(data, generated_data)
        self.losses["GP"].append(gradient_penalty.item())
        self.D_opt.zero_grad()
        d_loss = d_generated.mean() - d_real.mean() + gradient_penalty
        d_loss.backward()
        self.D_opt.step()
        self.generator_grads.append([p.grad.clone() for p in self.G.parameters()])
        self.losses["D"].append(d_loss.item())

    def _generator_train_iteration(self, data):
        self.G_opt.zero_grad()
        generated_data = self.sample_generator(data.size()[0])
        g_loss = -self.D(generated_data).mean()
        g_loss.backward()
        self.G_opt.step()
        self.losses["G"].append(g_loss.item())

    def _gradient_penalty(self, real_data, generated_data):
        batch_size = real_data.size()[0]
        alpha = torch.rand(batch_size, 1, 1, 1)
        alpha = alpha.expand_as(real_data).to(real_data.device)
        interpolated = alpha * real_data.data + (1 - alpha) * generated_data.data
        interpolated.requires_grad_(True)
        prob_interpolated = self.D(interpolated)
        gradients = torch.autograd.grad(outputs=prob_interpolated, inputs=interpolated,
                                        grad_outputs=torch.ones(prob_interpolated.size(),
                                                                dtype=real_data.dtype),
                                        create_graph=True, retain_graph=True)[0]
        gradients = gradients.view(batch_size, -1)
        self.losses["gradient_norm"].append(gradients.norm(2, dim=1).mean().item())
        gradients_norm = torch.sqrt(torch.sum(gradients ** 2, dim=1) + 1e-12)
        return self.gp_weight * ((gradients_norm - 1) ** 2).mean()

    def sample_generator(self, num_samples):
        return self.G(torch.randn(num_samples, 6, dtype=DT))

    def train(self, batches):
        for data in batches:
            self.num_steps += 1
            self._critic_train_iteration(data)
            if self.num_steps % self.critic_iterations == 0:
                self._generator_train_iteration(data)


def run_trainer():
    torch.manual_seed(11)
    np.random.seed(11)
    G, D = ImageGenerator().to(DT), ImageCritic(act=nn.ELU).to(DT)
    trainer = Trainer(G, D, torch.optim.Adam(G.parameters(), lr=1e-4, betas=(0.5, 0.99)),
                      torch.optim.Adam(D.parameters(), lr=1e-4, betas=(0.5, 0.99)))
    # A generator step's own zero_grad comes after the critic steps: start from zeros so the
    # critic's leftovers in G's .grad (none when the penalty is detached) can be compared.
    for p in G.parameters():
        p.grad = torch.zeros_like(p)
    trainer.train(torch.tanh(torch.randn(8, *IMG, dtype=DT)) for _ in range(STEPS))
    return _final(trainer.losses["GP"], G, D, losses=trainer.losses,
                  generator_grads=trainer.generator_grads)


def test_trainer_method_with_logged_norms_and_data_detached_inside():
    want = run_trainer()
    (statement,) = _after("trainer")
    with _doc_patch(statement, Trainer, "_gradient_penalty", Trainer=Trainer):
        got = run_trainer()
    # Without record= the log would stop after the checked first call: that is said at once.
    no_record = re.sub(r",\s*record=lambda .*\)\s*$", ")", statement, flags=re.S)
    assert "record=" not in no_record
    with pytest.warns(RuntimeWarning, match=r"self.losses\['gradient_norm'\] \(0 -> 1\)"):
        with _doc_patch(no_record, Trainer, "_gradient_penalty", Trainer=Trainer):
            stale = run_trainer()
    assert len(stale["losses"]["gradient_norm"]) == 1
    _assert_runs_agree(got, want)
    # The logged norm is the original's norm without eps: equal to ~1e-12 / (2 norm^2).
    assert len(got["losses"]["gradient_norm"]) == STEPS
    np.testing.assert_allclose(got["losses"]["gradient_norm"], want["losses"]["gradient_norm"],
                               rtol=1e-9)
    np.testing.assert_allclose(got["losses"]["D"], want["losses"]["D"], rtol=1e-10)
    for g_step, w_step in zip(got["generator_grads"], want["generator_grads"]):
        for g, w in zip(g_step, w_step):
            torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-13)


# ---------------------------------------------------------------------------------------------
# 7. A GAN class whose penalty method takes the critic and a condition as arguments and
#    returns the penalty and the per-sample norms, which the caller logs.
# ---------------------------------------------------------------------------------------------

class CondCritic(nn.Module):
    def __init__(self, d=4, c=3):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d + c, 16), nn.SiLU(), nn.Linear(16, 1))

    def forward(self, x, cond):
        return self.net(torch.cat([x, cond], dim=1))


class ConditionalWGAN:
    def __init__(self, lambda_gp):
        self.lambda_gp = lambda_gp
        self.critic = CondCritic().to(DT)
        self.gen = nn.Sequential(nn.Linear(5 + 3, 16), nn.SiLU(), nn.Linear(16, 4)).to(DT)
        self.opt_c = torch.optim.RMSprop(self.critic.parameters(), lr=5e-4)
        self.opt_g = torch.optim.RMSprop(self.gen.parameters(), lr=5e-4)
        self.log = defaultdict(list)

    def gradient_penalty(self, critic, real, fake, cond):
        eps = torch.rand(real.size(0), 1, device=real.device, dtype=real.dtype)
        mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
        score = critic(mixed, cond)
        (grad,) = torch.autograd.grad(score.sum(), mixed, create_graph=True)
        norm = grad.norm(2, dim=1)
        return self.lambda_gp * ((norm - 1) ** 2).mean(), norm

    def step(self, real, cond):
        noise = torch.randn(real.size(0), 5, dtype=DT)
        fake = self.gen(torch.cat([noise, cond], 1))
        gp, norm = self.gradient_penalty(self.critic, real, fake.detach(), cond)
        loss_c = self.critic(fake.detach(), cond).mean() - self.critic(real, cond).mean() + gp
        self.opt_c.zero_grad()
        loss_c.backward()
        self.opt_c.step()
        self.log["gp"].append(gp.item())
        self.log["norm"].append(norm.detach().clone())
        self.opt_g.zero_grad()
        (-self.critic(self.gen(torch.cat([noise, cond], 1)), cond).mean()).backward()
        self.opt_g.step()


def run_conditional():
    torch.manual_seed(13)
    np.random.seed(13)
    gan = ConditionalWGAN(lambda_gp=5.0)
    for _ in range(STEPS):
        cond = nn.functional.one_hot(torch.randint(0, 3, (10,)), 3).to(DT)
        gan.step(torch.randn(10, 4, dtype=DT) + cond @ torch.ones(3, 4, dtype=DT), cond)
    return _final(gan.log["gp"], gan.critic, gan.gen, norms=gan.log["norm"])


def test_method_that_takes_the_critic_and_returns_norms():
    want = run_conditional()
    (statement,) = _after("method_with_norms")
    with _doc_patch(statement, ConditionalWGAN, "gradient_penalty", GAN=ConditionalWGAN):
        got = run_conditional()
    _assert_runs_agree(got, want)
    for g, w in zip(got["norms"], want["norms"]):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# 8. A packed (PacGAN) tabular critic whose method takes device, pac and lambda_ as CTGAN's does,
#    fed the generator's output with its graph.
# ---------------------------------------------------------------------------------------------

class PackedDiscriminator(nn.Module):
    def __init__(self, input_dim, pac=4):
        super().__init__()
        self.pac, self.pacdim = pac, input_dim * pac
        self.seq = nn.Sequential(nn.Linear(self.pacdim, 16), nn.LeakyReLU(0.2),
                                 nn.Linear(16, 1))

    def calc_gradient_penalty(self, real_data, fake_data, device="cpu", pac=4, lambda_=10):
        alpha = torch.rand(real_data.size(0) // pac, 1, 1, device=device)
        alpha = alpha.repeat(1, pac, real_data.size(1)).view(-1, real_data.size(1))
        interpolates = alpha * real_data + ((1 - alpha) * fake_data)
        disc_interpolates = self(interpolates)
        gradients = torch.autograd.grad(outputs=disc_interpolates, inputs=interpolates,
                                        grad_outputs=torch.ones(disc_interpolates.size(),
                                                                device=device, dtype=DT),
                                        create_graph=True, retain_graph=True,
                                        only_inputs=True)[0]
        gradients_view = gradients.view(-1, pac * real_data.size(1)).norm(2, dim=1) - 1
        return ((gradients_view) ** 2).mean() * lambda_

    def forward(self, x):
        return self.seq(x.view(-1, self.pacdim))


def run_packed(disc_cls=None, pac=4, batch=16):
    torch.manual_seed(17)
    np.random.seed(17)
    device = torch.device("cpu")
    disc = (disc_cls or PackedDiscriminator)(5, pac=pac).to(DT)
    gen = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 5)).to(DT)
    opt_d = torch.optim.Adam(disc.parameters(), lr=2e-4, betas=(0.5, 0.9))
    opt_g = torch.optim.Adam(gen.parameters(), lr=2e-4, betas=(0.5, 0.9))
    penalties = []
    for _ in range(STEPS):
        real = torch.randn(batch, 5, dtype=DT)
        fake = gen(torch.randn(batch, 3, dtype=DT))
        y_fake, y_real = disc(fake), disc(real)
        pen = disc.calc_gradient_penalty(real, fake, device, disc.pac)
        loss_d = -(torch.mean(y_real) - torch.mean(y_fake))
        opt_d.zero_grad(set_to_none=False)
        pen.backward(retain_graph=True)
        loss_d.backward()
        opt_d.step()
        penalties.append(pen.item())
        opt_g.zero_grad(set_to_none=False)
        (-torch.mean(disc(gen(torch.randn(batch, 3, dtype=DT))))).backward()
        opt_g.step()
    return _final(penalties, disc, gen)


def test_packed_critic_method_with_device_and_pac():
    want = run_packed()
    (statement,) = _after("packed")
    with _doc_patch(statement, PackedDiscriminator, "calc_gradient_penalty",
                       Discriminator=PackedDiscriminator):
        got = run_packed()
    _assert_runs_agree(got, want)
    with patched_method(PackedDiscriminator, lambda_gp="lambda_", pac="pac", device="device",
                        detach_inputs=False):
        got = run_packed()
    _assert_runs_agree(got, want)
