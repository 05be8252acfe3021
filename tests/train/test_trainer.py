"""The WGAN-GP trainer: short CPU runs of every dataset and method, the fused penalty against the
plain-autograd penalty on a whole training trajectory, exact resume, atomic checkpoints and the
non-finite-loss stop."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from wgangp_fast import train as trainer_mod
from wgangp_fast.train import NonFiniteLossError, WGANGPConfig, WGANGPTrainer, folder

pytestmark = pytest.mark.usefixtures("one_thread")


CSV = "x,y,kind\n" + "".join(f"{i * 0.5:.2f},{(i * 7) % 5},{'ab'[i % 2]}\n" for i in range(40))


def small(dataset="ring8", **kw):
    # lr_warmup 0: the tests that read learning rates read the preset's decay alone
    settings = dict(steps=3, batch_size=16, hidden_dim=8, latent_dim=4, n_critic=2,
                    device="cpu", n_eval_samples=200, lr_warmup=0)
    if dataset == "csv":
        settings.update(batch_size=20, pac=5)
    settings.update(kw)
    return WGANGPConfig.for_dataset(dataset, **settings)


@pytest.fixture
def csv_path(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text(CSV)
    return str(path)


def _state(t):
    return {**{"g." + k: v for k, v in t.generator.state_dict().items()},
            **{"c." + k: v for k, v in t.critic.state_dict().items()}}


def test_config_defaults_are_seed_002s():
    cfg = WGANGPConfig()
    assert (cfg.latent_dim, cfg.hidden_dim, cfg.lr, cfg.beta1, cfg.beta2) == (100, 256, 1e-4, 0.0,
                                                                               0.9)
    assert (cfg.lambda_gp, cfg.n_critic, cfg.batch_size, cfg.seed) == (10.0, 5, 64, 42)
    assert cfg.method == "gp" and cfg.penalty_impl == "fused"
    tuned = WGANGPConfig.for_dataset("ring8", lr=5e-4)
    assert tuned.lr == 5e-4 and tuned.batch_size == trainer_mod.DATASET_PRESETS["ring8"][
        "batch_size"]
    assert WGANGPConfig.from_dict(tuned.to_dict()) == tuned


@pytest.mark.parametrize("kwargs,match", [
    ({"method": "wgan"}, "method must be one of"),
    ({"batch_size": 10, "pac": 3, "model": "pac"}, "multiple of pac"),
    ({"pac": 2, "model": "mlp"}, "packed critic"),
    ({"method": "sn", "model": "pac"}, "spectral norm"),
    ({"steps": -1}, "steps must be an int"),
    ({"lr": 0.0}, "lr must be a finite positive"),
    ({"beta2": 1.0}, r"beta2 must be in \[0, 1\)"),
    ({"dataset": "cifar"}, "dataset must be one of"),
    ({"penalty_impl": "slow"}, "penalty_impl"),
    ({"ema_decay": 1.0}, r"ema_decay must be in \[0, 1\)"),
    ({"ema_decay": -0.5}, "ema_decay must be a finite number"),
    ({"weight_init": "xavier"}, "weight_init must be one of"),
])
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WGANGPTrainer(small(**kwargs))


@pytest.mark.parametrize("dataset", ["ring8", "digits"])
def test_weight_init_reaches_both_networks(dataset):
    for init in ("normal", "he"):
        t = WGANGPTrainer(WGANGPConfig.for_dataset(dataset, weight_init=init, device="cpu",
                                                   steps=1))
        gains = (2 ** 0.5, torch.nn.init.calculate_gain("leaky_relu", 0.2))
        for net, gain in zip((t.generator, t.critic), gains):
            w = next(m for m in net.modules() if isinstance(m, torch.nn.Linear)).weight
            want = 0.02 if init == "normal" else gain / w.shape[1] ** 0.5
            assert w.std().item() == pytest.approx(want, rel=0.3), (init, type(net).__name__)
    # the default starts the toy generator's samples at the origin; "he" does not
    if dataset == "ring8":
        z = torch.randn(512, 2)
        with torch.no_grad():
            assert t.generator(z).std() > 0.2


def test_conv_model_needs_square_power_of_two_images():
    with pytest.raises(ValueError, match="needs image data"):
        WGANGPTrainer(small(model="conv"))
    with pytest.raises(TypeError, match="unknown WGANGPConfig settings: colour"):
        WGANGPConfig.for_dataset("ring8", colour=1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_cuda_device_without_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        WGANGPTrainer(small(device="cuda"))


@pytest.mark.parametrize("dataset,kw", [
    ("ring8", {}),
    ("grid25", {}),
    ("swissroll", {}),
    ("digits", {}),
    ("digits", {"model": "conv", "feature_maps": 4}),
    ("digits", {"model": "conv", "feature_maps": 2, "image_size": 16}),
    ("ring8", {"model": "pac", "pac": 4}),
])
def test_short_runs_of_each_dataset(dataset, kw):
    t = WGANGPTrainer(small(dataset, **kw))
    hist = t.train()
    assert t.step == 3 and t.critic_iters == 6
    for key in ("loss_c", "loss_g", "gp", "wasserstein"):
        assert len(hist[key]) == 3 and np.isfinite(hist[key]).all()
    assert any(v > 0 for v in hist["gp"])
    x = t.generate_samples(10)
    assert x.shape == (10, *t.dataset.shape)


def test_csv_run_writes_a_table(tmp_path, csv_path):
    out = tmp_path / "out"
    t = WGANGPTrainer(small("csv", data_path=csv_path, out_dir=str(out)))
    assert t.model_kind == "pac" and t.critic.pac == 5
    t.train()
    t.write_outputs()
    lines = (out / "samples.csv").read_text().splitlines()
    assert lines[0] == "x,y,kind" and len(lines) == 2501
    kinds = {line.split(",")[2] for line in lines[1:]}
    assert kinds <= {"a", "b"}
    assert all(line.split(",")[1].lstrip("-").isdigit() for line in lines[1:])


def test_image_array_and_mnist_runs(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, size=(30, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "imgs.npy", imgs)
    t = WGANGPTrainer(small("images", data_path=str(tmp_path / "imgs.npy")))
    t.train()
    assert t.dataset.shape == (1, 8, 8)


def test_methods(tmp_path):
    clip = WGANGPTrainer(small(method="clip", clip_value=0.05, lr_decay="none"))
    clip.train()
    assert isinstance(clip.optimizer_c, torch.optim.RMSprop)
    assert clip.optimizer_c.param_groups[0]["lr"] == 5e-5
    assert all(p.abs().max() <= 0.05 for p in clip.critic.parameters())
    assert clip.history["gp"] == [0.0] * 3

    sn = WGANGPTrainer(small(method="sn"))
    sn.train()
    assert sn.history["gp"] == [0.0] * 3
    assert any("parametrizations" in name for name, _ in sn.critic.named_modules())

    # with N(0, 0.02) weights the critic starts nearly flat (gradient norms < 1): one-sided LP is
    # ~0 there, GP is not
    lp = WGANGPTrainer(small(method="lp", weight_init="normal"))
    lp.train()
    gp = WGANGPTrainer(small(method="gp", weight_init="normal"))
    gp.train()
    assert lp.history["gp"][0] < 1e-3 * gp.history["gp"][0]


@pytest.mark.parametrize("dataset,kw", [
    ("ring8", {}),
    ("ring8", {"method": "lp"}),
    ("csv", {}),
    ("digits", {"model": "conv", "feature_maps": 4}),
])
def test_fused_and_autograd_penalties_give_the_same_trajectory(dataset, kw, csv_path):
    if dataset == "csv":
        kw = dict(kw, data_path=csv_path)
    runs = []
    for impl in ("fused", "autograd"):
        t = WGANGPTrainer(small(dataset, penalty_impl=impl, steps=4, **kw))
        if t.config.method == "lp":
            # steep critic (gradient norms > 1), so that the one-sided penalty is not all zeros
            with torch.no_grad():
                for p in t.critic.parameters():
                    p.mul_(30.0)
        t.train()
        runs.append(t)
    a, b = runs
    for key in a.history:
        assert np.allclose(a.history[key], b.history[key], rtol=1e-4, atol=1e-6), key
    assert max(a.history["gp"]) > 0
    # A bias just before a BatchNorm has a true gradient of 0: Adam turns its rounding noise into
    # lr-sized steps, so such biases (and the running means that track them) are compared through
    # the generator's (train-mode, batch statistics) output instead.
    skip = _pre_batchnorm_biases(a.generator)
    for (name, x), y in zip(_state(a).items(), _state(b).values()):
        if x.is_floating_point() and name not in skip:
            assert torch.allclose(x, y, rtol=1e-4, atol=1e-6), name
    z = torch.randn(64, a.config.latent_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.manual_seed(0)
        out_a = a.generator(z)
        torch.manual_seed(0)
        assert torch.allclose(out_a, b.generator(z), rtol=1e-4, atol=1e-5)


def _pre_batchnorm_biases(generator):
    names = []
    modules = list(generator.named_modules())
    for (name, m), (bn_name, nxt) in zip(modules, modules[1:]):
        if isinstance(m, torch.nn.Linear) and isinstance(nxt, torch.nn.BatchNorm1d):
            names += [f"g.{name}.bias", f"g.{bn_name}.running_mean"]
    return set(names)


def test_linear_lr_decay():
    t = WGANGPTrainer(small(lr=1e-3, lr_decay="linear", steps=4))
    t.train()
    for opt in (t.optimizer_g, t.optimizer_c):
        assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * (1 - 3 / 4))
    flat = WGANGPTrainer(small(lr=1e-3, lr_decay="none", steps=4))
    flat.train()
    assert flat.optimizer_g.param_groups[0]["lr"] == 1e-3


def test_lr_warmup_ramps_then_decays():
    t = WGANGPTrainer(small(lr=1e-3, lr_decay="linear", lr_warmup=4, steps=8))
    seen = []
    for _ in range(8):
        t.train_step()
        seen.append([o.param_groups[0]["lr"] for o in (t.optimizer_g, t.optimizer_c)])
    want = [1e-3 * min(1.0, (s + 1) / 4) * (1 - s / 8) for s in range(8)]
    assert [g for g, _ in seen] == pytest.approx(want)
    assert [c for _, c in seen] == pytest.approx(want)
    warm_only = WGANGPTrainer(small(lr=1e-3, lr_decay="none", lr_warmup=2, steps=4))
    warm_only.train()
    assert warm_only.optimizer_g.param_groups[0]["lr"] == pytest.approx(1e-3)


class _Crash(Exception):
    pass


def _crash_at(trainer, step: int) -> None:
    """Make `trainer` raise _Crash when train() starts its iteration at `step`."""
    iterate = trainer._iterate

    def crashing_step():
        if trainer.step == step:
            raise _Crash
        return iterate()

    trainer._iterate = crashing_step


@pytest.mark.parametrize("dataset,ema_decay", [("ring8", 0.0), ("ring8", 0.9), ("csv", 0.0)])
def test_resume_ends_with_the_same_weights(tmp_path, dataset, ema_decay, csv_path):
    extra = {"data_path": csv_path} if dataset == "csv" else {}
    extra["ema_decay"] = ema_decay
    straight = WGANGPTrainer(small(dataset, steps=6, **extra))
    straight.train()

    out = str(tmp_path / "run")
    first = WGANGPTrainer(small(dataset, steps=6, out_dir=out, checkpoint_every=2, **extra))
    _crash_at(first, 4)
    with pytest.raises(_Crash):
        first.train()
    torch.manual_seed(1234)
    np.random.seed(1234)
    resumed = WGANGPTrainer.from_checkpoint(os.path.join(out, "checkpoint.pt"))
    assert resumed.step == 4
    resumed.train()
    assert resumed.step == 6
    for (name, x), y in zip(_state(straight).items(), _state(resumed).values()):
        assert torch.equal(x, y), name
    assert straight.history == resumed.history
    if ema_decay:
        for (name, x), y in zip(straight.generator_ema.state_dict().items(),
                                resumed.generator_ema.state_dict().values()):
            assert torch.equal(x, y), name
    else:
        assert resumed.generator_ema is None
    sa, sb = straight.optimizer_c.state_dict(), resumed.optimizer_c.state_dict()
    for k in sa["state"]:
        assert torch.equal(sa["state"][k]["exp_avg"], sb["state"][k]["exp_avg"])


def test_checkpoint_loads_weights_only(tmp_path):
    t = WGANGPTrainer(small(out_dir=str(tmp_path)))
    t.train()
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["step"] == 3 and state["config"]["dataset"] == "ring8"
    assert isinstance(state["rng"]["torch"], torch.Tensor)
    with pytest.raises(ValueError, match="cannot change lr"):
        WGANGPTrainer.from_checkpoint(str(tmp_path / "checkpoint.pt"), lr=1.0)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.pt: not a readable"):
        WGANGPTrainer.read_checkpoint(str(tmp_path / "junk.pt"))


def test_crash_between_write_and_rename_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    t = WGANGPTrainer(small(out_dir=str(tmp_path)))
    t.train(2)
    path = tmp_path / "checkpoint.pt"
    before = path.read_bytes()

    def boom(src, dst):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="simulated crash"):
        t.train(3)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert WGANGPTrainer.read_checkpoint(str(path))["step"] == 2
    # the live history.csv, and no temporary checkpoint left
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt", "history.csv"]
    resumed = WGANGPTrainer.from_checkpoint(str(path))
    assert resumed.step == 2


def test_non_finite_loss_stops_and_keeps_the_good_checkpoint(tmp_path):
    t = WGANGPTrainer(small(out_dir=str(tmp_path), steps=5, checkpoint_every=1))
    t.train(2)
    with torch.no_grad():
        next(t.critic.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 3"):
        t.train()
    with pytest.raises(NonFiniteLossError):
        t.save_checkpoint(str(tmp_path / "checkpoint.pt"))
    state = WGANGPTrainer.read_checkpoint(str(tmp_path / "checkpoint.pt"))
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["critic"].values())
    assert len(t.history["loss_c"]) == 2


def test_generate_samples_with_a_seed_leaves_the_training_stream_alone():
    t = WGANGPTrainer(small())
    before = torch.get_rng_state()
    a = t.generate_samples(5, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a, t.generate_samples(5, seed=7))
    assert t.generator.training


def test_write_outputs(tmp_path):
    t = WGANGPTrainer(small(out_dir=str(tmp_path)))
    t.train()
    metrics = t.write_outputs()
    for name in ("samples.npy", "samples.png", "curves.png", "metrics.json", "history.csv",
                 "config.json", "checkpoint.pt"):
        assert (tmp_path / name).is_file(), name
    samples = np.load(tmp_path / "samples.npy")
    assert samples.shape == (2500, 2)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["modes_total"] == 8 and saved == json.loads(json.dumps(metrics))
    assert len((tmp_path / "history.csv").read_text().splitlines()) == 4
    assert json.loads((tmp_path / "config.json").read_text())["steps"] == 3


def test_digits_outputs_are_images(tmp_path):
    t = WGANGPTrainer(small("digits", out_dir=str(tmp_path), steps=1))
    t.train()
    metrics = t.write_outputs()
    samples = np.load(tmp_path / "samples.npy")
    # 8-bit pixels [N, H, W, C], the images' own format (61 MB of float64 for 2500 32x32 RGB
    # images before)
    assert samples.shape == (2500, 8, 8, 1) and samples.dtype == np.uint8
    grid = t.generate_samples(noise=torch.zeros(1, 4)).numpy()
    assert grid.shape == (1, 1, 8, 8)
    assert 0 <= metrics["classes_covered"] <= 10 and metrics["frechet_distance"] > 0


@pytest.mark.parametrize("batchnorm", [True, False])
def test_ema_generator_follows_the_formula(batchnorm):
    t = WGANGPTrainer(small(ema_decay=0.95, steps=40, generator_batchnorm=batchnorm))
    assert t.generator_ema is not None and not t.generator_ema.training
    assert all(not p.requires_grad for p in t.generator_ema.parameters())
    for step in range(40):
        before = {k: v.clone() for k, v in t.generator_ema.state_dict().items()}
        t.train_step()
        d = min(0.95, (1 + t.step) / (10 + t.step))
        assert t.ema_decay_at(t.step) == pytest.approx(d)
        raw = t.generator.state_dict()
        for k, avg in t.generator_ema.state_dict().items():
            if avg.is_floating_point():
                expected = d * before[k] + (1 - d) * raw[k]
                assert torch.allclose(avg, expected, rtol=1e-6, atol=1e-7), (step, k)
            else:
                assert torch.equal(avg, raw[k]), k
    # the warm-up: 0.1 before the first update, the full decay from t = 170 on
    assert t.ema_decay_at(0) == pytest.approx(0.1) and t.ema_decay_at(1000) == 0.95
    weights = [(a, b) for a, b in zip(t.generator_ema.parameters(), t.generator.parameters())]
    assert any(not torch.allclose(a, b) for a, b in weights)
    # samples and metrics come from the averaged generator unless ema=False
    z = torch.randn(32, t.config.latent_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        t.generator.eval()
        raw_out, ema_out = t.generator(z), t.generator_ema(z)
        t.generator.train()
    assert torch.equal(t.generate_samples(noise=z), ema_out)
    assert torch.equal(t.generate_samples(noise=z, ema=False), raw_out)
    assert not torch.allclose(ema_out, raw_out)
    assert t.generator.training and not t.generator_ema.training


def test_no_ema_by_default_and_samples_from_the_generator():
    t = WGANGPTrainer(small(ema_decay=0.0))
    t.train()
    assert t.generator_ema is None
    z = torch.randn(8, t.config.latent_dim)
    assert torch.equal(t.generate_samples(noise=z), t.generate_samples(noise=z, ema=False))


def test_checkpoint_holds_the_ema_generator(tmp_path):
    out = str(tmp_path / "run")
    t = WGANGPTrainer(small(ema_decay=0.9, steps=4, out_dir=out))
    t.train()
    path = os.path.join(out, "checkpoint.pt")
    state = WGANGPTrainer.read_checkpoint(path)
    for k, v in t.generator_ema.state_dict().items():
        assert torch.equal(state["generator_ema"][k], v), k
    loaded = WGANGPTrainer.from_checkpoint(path)
    z = torch.randn(16, t.config.latent_dim)
    assert torch.equal(loaded.generate_samples(noise=z), t.generate_samples(noise=z))
    metrics = t.write_outputs()
    assert metrics["ema_decay"] == 0.9
    assert {"modes_covered", "high_quality_share", "w1_exact"} <= set(metrics["raw_generator"])
    del state["generator_ema"]
    with pytest.raises(ValueError, match="no averaged generator"):
        WGANGPTrainer(t.config).load_state_dict(state)


def test_non_finite_ema_weights_are_not_saved(tmp_path):
    t = WGANGPTrainer(small(ema_decay=0.5))
    t.train_step()
    with torch.no_grad():
        next(t.generator_ema.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteLossError):
        t.save_checkpoint(str(tmp_path / "checkpoint.pt"))
    assert not (tmp_path / "checkpoint.pt").exists()


def test_ema_leaves_the_training_trajectory_alone():
    plain = WGANGPTrainer(small(ema_decay=0.0, steps=4))
    plain.train()
    averaged = WGANGPTrainer(small(ema_decay=0.9, steps=4))
    averaged.train()
    for (name, x), y in zip(_state(plain).items(), _state(averaged).values()):
        assert torch.equal(x, y), name
    assert plain.history == averaged.history
    z = torch.randn(16, plain.config.latent_dim)
    assert torch.equal(plain.generate_samples(noise=z), averaged.generate_samples(noise=z, ema=False))


# -- checkpoints that are not ours, or not finite -------------------------------------------

def _saved(tmp_path, **kw):
    t = WGANGPTrainer(small(out_dir=str(tmp_path), **kw))
    t.train()
    return t, str(tmp_path / "checkpoint.pt")


@pytest.mark.parametrize("payload, words", [
    (torch.zeros(3), ["not a wgangp_fast checkpoint (it holds a Tensor"]),
    ([1, 2], ["it holds a list"]),
    ({"model": torch.zeros(2)}, ["a dict without format, config, step", "fixed_noise, history"]),
])
def test_a_file_that_is_not_our_checkpoint_is_a_clear_error(tmp_path, payload, words):
    path = tmp_path / "other.pt"
    torch.save(payload, path)
    for call in (lambda: WGANGPTrainer.read_checkpoint(str(path)),
                 lambda: WGANGPTrainer.from_checkpoint(str(path))):
        with pytest.raises(trainer_mod.CheckpointError) as info:
            call()
        message = str(info.value)
        for word in [str(path)] + words + ["start a new run without --resume"]:
            assert word in message, f"{word!r} not in {message!r}"


def test_a_damaged_checkpoint_says_what_is_wrong(tmp_path):
    _, path = _saved(tmp_path)
    state = torch.load(path, weights_only=True)
    for change, words in ((lambda s: s.update(format=7), "checkpoint format 7 is not supported"),
                          (lambda s: s.update(step="3"), "step is a str, expected int"),
                          (lambda s: s["history"].pop("gp"), "history does not hold")):
        bad = {**state, "history": dict(state["history"])}
        change(bad)
        with pytest.raises(trainer_mod.CheckpointError, match=words):
            trainer_mod.check_checkpoint(bad, "x.pt")


@pytest.mark.parametrize("where, name", [
    (lambda s: next(iter(s["critic"].values())), "critic.net.0.weight"),
    (lambda s: s["optimizer_c"]["state"][0]["exp_avg"], "optimizer_c.state.0.exp_avg"),
    (lambda s: s["optimizer_g"]["state"][1]["exp_avg_sq"], "optimizer_g.state.1.exp_avg_sq"),
])
def test_a_checkpoint_with_nan_weights_or_moments_is_refused_on_load(tmp_path, where, name):
    _, path = _saved(tmp_path)
    state = torch.load(path, weights_only=True)
    where(state).view(-1)[0] = float("nan")
    torch.save(state, path)
    with pytest.raises(trainer_mod.CheckpointError) as info:
        WGANGPTrainer.from_checkpoint(path)
    message = str(info.value)
    assert "holds NaN or infinite values" in message and name in message
    assert WGANGPTrainer.read_checkpoint(path, check=False)["step"] == 3  # still inspectable


def test_nan_adam_moments_are_never_saved_over_a_good_checkpoint(tmp_path):
    t, path = _saved(tmp_path, steps=2)
    before = open(path, "rb").read()
    next(iter(t.optimizer_c.state.values()))["exp_avg"].fill_(float("inf"))
    with pytest.raises(NonFiniteLossError):
        t.save_checkpoint(path)
    assert open(path, "rb").read() == before


def test_a_category_added_to_the_csv_is_named_on_resume(tmp_path, csv_path):
    _, path = _saved(tmp_path / "run", **{"dataset": "csv", "data_path": csv_path})
    with open(csv_path, "a") as f:
        f.write("1.00,2,c\n")
    with pytest.raises(trainer_mod.CheckpointError) as info:
        WGANGPTrainer.from_checkpoint(path)
    message = str(info.value)
    for word in (f"the data ({csv_path}) no longer matches the checkpoint",
                 "column 'kind' had the categories ['a', 'b'] and now has ['a', 'b', 'c']",
                 "added ['c']", "resume with the data the run started with"):
        assert word in message, f"{word!r} not in {message!r}"


def test_a_checkpoint_without_a_data_signature_is_checked_by_its_weights(tmp_path, csv_path):
    _, path = _saved(tmp_path / "run", **{"dataset": "csv", "data_path": csv_path})
    state = torch.load(path, weights_only=True)
    del state["data"]  # as the checkpoints written before the signature
    torch.save(state, path)
    with open(csv_path, "a") as f:
        f.write("1.00,2,c\n")
    with pytest.raises(trainer_mod.CheckpointError, match="does not fit the model that the data"):
        WGANGPTrainer.from_checkpoint(path)


def test_numpy_numbers_in_the_config_train_and_checkpoint(tmp_path):
    cfg = small(out_dir=str(tmp_path), batch_size=np.int64(16), lr=np.float32(1e-3),
                n_critic=np.uint8(2), generator_batchnorm=np.bool_(False))
    t = WGANGPTrainer(cfg)
    assert type(t.config.batch_size) is int and type(t.config.lr) is float
    t.train()
    assert WGANGPTrainer.from_checkpoint(str(tmp_path / "checkpoint.pt")).step == 3


def test_the_first_checkpoint_is_written_before_the_first_step(tmp_path):
    t = WGANGPTrainer(small(out_dir=str(tmp_path), checkpoint_every=0))
    _crash_at(t, 1)
    with pytest.raises(_Crash):
        t.train()
    assert WGANGPTrainer.read_checkpoint(str(tmp_path / "checkpoint.pt"))["step"] == 0
    # the lock went with the run; history.csv has its header (the step taken before the crash
    # was not read from the device yet: log_every 10)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt", "history.csv"]
    assert (tmp_path / "history.csv").read_text().startswith("step,loss_c,")


def test_sigint_during_a_step_stops_after_it_with_a_checkpoint(tmp_path):
    import signal

    straight = WGANGPTrainer(small(steps=5))
    straight.train()
    t = WGANGPTrainer(small(out_dir=str(tmp_path), steps=5, checkpoint_every=0))
    step = t._iterate

    def interrupted_step():
        if t.step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # arrives mid-step: the step still completes
        return step()

    t._iterate = interrupted_step
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(trainer_mod.TrainingInterrupted, match="SIGINT stopped the run after "
                                                              "step 3; checkpoint saved to"):
        t.train()
    # the handler found before the run is back (default_int_handler, or SIG_IGN for a test
    # run started in the background)
    assert signal.getsignal(signal.SIGINT) is before
    resumed = WGANGPTrainer.from_checkpoint(str(tmp_path / "checkpoint.pt"))
    assert resumed.step == 3
    resumed.train()
    for (name, x), y in zip(_state(straight).items(), _state(resumed).values()):
        assert torch.equal(x, y), name


# -- the output folder's lock ---------------------------------------------------------------

_HOLDER = ("import sys, time\nfrom wgangp_fast.train import lock_output_folder\n"
           "lock = lock_output_folder(sys.argv[1])\nprint('locked', flush=True)\n"
           "time.sleep(600)\n")


def _subprocess_env():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", "")), root


def test_a_second_run_on_a_locked_folder_is_refused_with_the_holders_pid(tmp_path):
    import subprocess
    import sys

    env, root = _subprocess_env()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], env=env, cwd=root,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t = WGANGPTrainer(small(out_dir=str(tmp_path)))
        with pytest.raises(trainer_mod.OutputFolderError) as info:
            t.train()
        message = str(info.value)
        assert f"--out {tmp_path} is in use by another wgangp-fast run (pid {holder.pid} on" \
               in message and "another output folder (--out)" in message
        assert t.step == 0 and not (tmp_path / "checkpoint.pt").exists()
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the dead holder's lock: the folder is usable again
    t.train()
    assert t.step == 3


def test_a_dead_runs_lock_and_temporaries_are_taken_over(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    (tmp_path / folder.LOCK_NAME).write_text(f"{pid} somehost 0\n")
    (tmp_path / ".checkpoint.pt.abc123.tmp").write_bytes(b"torn")
    (tmp_path / "other.tmp").write_bytes(b"not ours")
    with trainer_mod.lock_output_folder(str(tmp_path)) as lock:
        assert lock.stale_holder == f"pid {pid} on somehost"
        assert lock.removed == [".checkpoint.pt.abc123.tmp"]
        text = (tmp_path / folder.LOCK_NAME).read_text()
        assert text.split()[0] == str(os.getpid())
        with trainer_mod.lock_output_folder(str(tmp_path)) as again:  # re-entrant
            assert again.stale_holder == "" and again.removed == []
        assert (tmp_path / folder.LOCK_NAME).exists()
    assert sorted(os.listdir(tmp_path)) == ["other.tmp"]


def test_the_pid_file_lock_without_flock(tmp_path, monkeypatch):
    # where fcntl is missing (Windows) the lock is an O_EXCL pid file, judged by its pid
    import subprocess
    import sys

    monkeypatch.setattr(folder, "fcntl", None)
    lock_file = tmp_path / folder.LOCK_NAME
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        lock_file.write_text(f"{alive.pid} otherhost 0\n")
        with pytest.raises(trainer_mod.OutputFolderError,
                           match=f"in use by another wgangp-fast run \\(pid {alive.pid} on "
                                 f"otherhost\\)"):
            trainer_mod.lock_output_folder(str(tmp_path))
    finally:
        alive.kill()
        alive.wait()
    with trainer_mod.lock_output_folder(str(tmp_path)) as lock:
        assert lock.stale_holder == f"pid {alive.pid} on otherhost"
        assert lock_file.read_text().split()[0] == str(os.getpid())
    assert not lock_file.exists()
