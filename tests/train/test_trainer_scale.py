"""Mixed precision, lazy regularisation and the R1 / R2 / DRAGAN methods of the trainer, on tiny
CPU runs: fp16 and bf16 stay finite and near fp32, an fp16 overflow the GradScaler skips does not
stop the run (and never reaches the weights), --gp-every k weights the penalty by k on every k-th
critic step, the lazy Adam correction, and each new penalty against its plain-autograd reference."""

from __future__ import annotations

import pytest
import torch

from wgangp_fast.testing import dragan_penalty, r1_penalty
from wgangp_fast.train import NonFiniteLossError, WGANGPConfig, WGANGPTrainer

pytestmark = pytest.mark.usefixtures("one_thread")


def small(dataset="ring8", **kw):
    # Fixed lr and a BatchNorm generator rather than the ring8 preset's: at this tiny width a
    # generator without BatchNorm, initialised N(0, 0.02), outputs values near 5e-6, below
    # float16's smallest normal number (6e-5), and the fp16-vs-fp32 comparison below would measure
    # that rounding, not the AMP code. And N(0, 0.02) weights rather than the preset's He init:
    # with He's larger gradients, GradScaler's first scale (65536) overflows float16 twice and
    # skips both first critic steps (scale 16384 after one iteration, 32768 with N(0, 0.02)), so
    # the fp16 run's first penalty would follow other weights than the fp32 run's.
    settings = dict(steps=3, batch_size=16, hidden_dim=8, latent_dim=4, n_critic=2, lr=5e-4,
                    generator_batchnorm=True, device="cpu", n_eval_samples=200,
                    lr_decay="none", lr_warmup=0, weight_init="normal")
    settings.update(kw)
    return WGANGPConfig.for_dataset(dataset, **settings)


def _flat(module):
    return torch.cat([p.detach().float().reshape(-1) for p in module.parameters()])


def _grads(module):
    return torch.cat([p.grad.detach().reshape(-1) for p in module.parameters()])


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_low_precision_steps_stay_finite_and_close_to_fp32(precision):
    runs = {}
    for p in ("fp32", precision):
        t = WGANGPTrainer(small(precision=p, steps=4, hidden_dim=16))
        start = _flat(t.critic)
        t.train()
        runs[p] = (t, start)
    (ref, start), (low, low_start) = runs["fp32"], runs[precision]
    assert torch.equal(start, low_start)
    assert low.config.precision == precision
    assert (low.scaler is not None) == (precision == "fp16")
    for key in ("wasserstein", "gp", "loss_g"):
        assert all(torch.isfinite(torch.tensor(low.history[key]))), key
    assert torch.isfinite(_flat(low.critic)).all() and torch.isfinite(_flat(low.generator)).all()
    # The weights move the same way: the gap between the runs is small next to how far they moved.
    moved = (_flat(ref.critic) - start).norm()
    gap = (_flat(low.critic) - _flat(ref.critic)).norm()
    assert moved > 0
    assert gap < 0.35 * moved, (float(gap), float(moved))
    gp_ref, gp_low = ref.history["gp"][0], low.history["gp"][0]
    assert gp_low == pytest.approx(gp_ref, rel=0.05)


def test_fp16_overflow_is_skipped_not_fatal_and_never_reaches_the_weights():
    t = WGANGPTrainer(small(precision="fp16", steps=12, n_critic=1))
    # A scale far beyond float16's range: the first steps overflow and the scaler backs off; with
    # growth every step it keeps growing back into overflow, so skips recur through the run.
    for name in ("scaler", "scaler_g"):
        setattr(t, name, torch.amp.GradScaler("cpu", init_scale=2.0 ** 40,
                                              backoff_factor=2.0 ** -6, growth_interval=1))
    scales = []
    for _ in range(12):
        t.train_step()
        scales.append(t.scaler.get_scale())
        assert torch.isfinite(_flat(t.critic)).all() and torch.isfinite(_flat(t.generator)).all()
    assert t.amp_skipped_steps > 0
    assert scales[-1] < 2.0 ** 40
    assert any(b > a for a, b in zip(scales, scales[1:])), scales  # it grew at least once
    assert t.step == 12 and len(t.history["gp"]) == 12


def test_fp16_non_finite_forward_still_stops_the_run():
    t = WGANGPTrainer(small(precision="fp16", steps=4))
    t.train(1)
    with torch.no_grad():
        next(t.critic.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 2"):
        t.train()


def test_precision_config_errors():
    with pytest.raises(ValueError, match="precision must be one of"):
        small(precision="fp8").validate()
    with pytest.raises(ValueError, match="gp_every"):
        small(gp_every=0).validate()
    with pytest.raises(ValueError, match="gp_every"):
        small(method="clip", gp_every=4).validate()


def _real_fake(t, seed=3):
    g = torch.Generator().manual_seed(seed)
    real = t.dataset.sample(t.config.batch_size, g)
    fake = torch.randn(real.shape, generator=g)
    alpha = torch.rand(real.shape[0], generator=g)
    return real, fake, alpha


def test_gp_every_k_weights_the_penalty_by_k_on_every_kth_critic_step():
    lam = 0.7
    lazy = WGANGPTrainer(small(gp_every=4, lambda_gp=lam))
    dense = WGANGPTrainer(small(gp_every=1, lambda_gp=4 * lam))
    none = WGANGPTrainer(small(gp_every=1, lambda_gp=0.0))
    real, fake, alpha = _real_fake(lazy)
    grads = []
    for t in (lazy, dense, none):
        t.optimizer_c.zero_grad(set_to_none=True)
        t.critic_step.loss(real, fake, alpha=alpha).backward()
        grads.append(_grads(t.critic))
    # a regularised step: -w + 4 * pen(lambda) == -w + pen(4 lambda)
    torch.testing.assert_close(grads[0], grads[1])
    assert not torch.allclose(grads[0], grads[2])
    step, steps_run, calls = lazy.critic_step, [], []
    run, penalty = step.run, step._penalty

    def counting_run(*args, **kw):
        steps_run.append(None)
        return run(*args, **kw)

    def counting_penalty(*args, **kw):
        calls.append(len(steps_run) - 1)
        return penalty(*args, **kw)

    step.run, step._penalty = counting_run, counting_penalty
    lazy.train(2)
    lazy.train(5)
    assert lazy.critic_iters == 10 == len(steps_run)
    assert calls == [0, 4, 8]
    # the recorded gp is the penalty in its usual units (not times k), from the last reg step
    assert all(v > 0 for v in lazy.history["gp"])


def test_lazy_adam_correction():
    k, lr, b1, b2 = 4, 2e-3, 0.5, 0.99
    c = k / (k + 1)
    t = WGANGPTrainer(small(gp_every=k, lazy_adam_correction=True, lr=lr, beta1=b1, beta2=b2,
                            lr_decay="linear", steps=4))
    group = t.optimizer_c.param_groups[0]
    assert group["lr"] == pytest.approx(lr * c)
    assert group["betas"] == pytest.approx((b1 ** c, b2 ** c))
    assert t.optimizer_g.param_groups[0]["lr"] == pytest.approx(lr)
    assert t.optimizer_g.param_groups[0]["betas"] == pytest.approx((b1, b2))
    t.train(2)
    # the linear decay applies on top of the correction (the lr of step 2 is set at its start)
    assert group["lr"] == pytest.approx(lr * c * (1 - 1 / 4))
    assert t.optimizer_g.param_groups[0]["lr"] == pytest.approx(lr * (1 - 1 / 4))
    plain = WGANGPTrainer(small(gp_every=k, lr=lr, beta1=b1, beta2=b2))
    assert plain.optimizer_c.param_groups[0]["betas"] == pytest.approx((b1, b2))


@pytest.mark.parametrize("method", ["r1", "r2", "dragan"])
def test_r1_r2_dragan_train_and_match_the_plain_autograd_penalty(method):
    lam = 3.0
    t = WGANGPTrainer(small(method=method, lambda_gp=lam, steps=2))
    t.train()
    assert t.step == 2
    assert all(torch.isfinite(torch.tensor(t.history["gp"])))
    assert all(v > 0 for v in t.history["gp"])
    # a steeper critic than at initialisation, so that the penalties are far from zero
    with torch.no_grad():
        for p in t.critic.parameters():
            p.mul_(30.0)
    real, fake, _ = _real_fake(t)
    for impl in ("fused", "autograd"):
        t.critic_step.penalty_impl = impl
        torch.manual_seed(11)
        got = t.critic_step.penalty(real, fake)
        torch.manual_seed(11)
        if method == "r1":
            want = r1_penalty(t.critic, real, gamma=lam)
        elif method == "r2":
            want = r1_penalty(t.critic, fake, gamma=lam)
        else:
            want = dragan_penalty(t.critic, real, lambda_gp=lam)
        assert want.item() > 1e-2
        torch.testing.assert_close(got, want, rtol=1e-5, atol=0.0)
    if method != "r1":
        # r2 / dragan look at other points than r1: the values differ
        torch.manual_seed(11)
        assert not torch.allclose(t.critic_step.penalty(real, fake),
                                  r1_penalty(t.critic, real, gamma=lam))


def test_fp16_lazy_resume_ends_with_the_same_weights(tmp_path):
    """The GradScalers' state, the lazy schedule and the last penalty survive a checkpoint."""
    settings = dict(precision="fp16", gp_every=3, n_critic=1, steps=4, out_dir=str(tmp_path))
    straight = WGANGPTrainer(small(**settings))
    straight.train()
    first = WGANGPTrainer(small(**settings))
    first.train(2)
    resumed = WGANGPTrainer.from_checkpoint(str(tmp_path / "checkpoint.pt"))
    assert resumed.step == 2 and resumed.scaler.get_scale() == first.scaler.get_scale()
    resumed.train()
    assert torch.equal(_flat(resumed.critic), _flat(straight.critic))
    assert torch.equal(_flat(resumed.generator), _flat(straight.generator))
    assert resumed.history == straight.history


def test_cli_flags(tmp_path):
    import json

    from wgangp_fast import cli

    out = tmp_path / "run"
    code = cli.main(["train", "--out", str(out), "--steps", "2", "--batch", "16", "--hidden-dim",
                     "8", "--latent-dim", "4", "--n-critic", "2", "--eval-samples", "200",
                     "--no-progress", "--device", "cpu", "--method", "r1", "--precision", "bf16",
                     "--gp-every", "2", "--lazy-adam-correction"])
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["method"], config["precision"], config["gp_every"],
            config["lazy_adam_correction"]) == ("r1", "bf16", 2, True)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["precision"] == "bf16" and metrics["gp_every"] == 2
    with pytest.raises(SystemExit):
        cli.main(["train", "--precision", "fp64"])
    assert cli.main(["train", "--out", str(tmp_path / "bad"), "--method", "sn", "--gp-every",
                     "2", "--device", "cpu"]) == 2
