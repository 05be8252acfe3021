"""The trainer's iterations run through wgangp_fast.steps.TrainStep in every configuration and
step mode (--step-mode): every method, precision and option calls CriticStep for its critic steps,
the same training in the compiled and (simulated) graph modes, exact resume, learning-rate
decay, and the configurations a mode refuses before training."""

from __future__ import annotations

import math

import pytest
import torch

from wgangp_fast import cli, steps
from wgangp_fast.train import WGANGPConfig, WGANGPTrainer

pytestmark = pytest.mark.usefixtures("one_thread")

# aot_eager: dynamo and AOTAutograd without inductor's code generation (seconds, not tens); it
# runs the random ops eagerly in program order, as the graph simulation does
FAST = {"compile_options": {"backend": "aot_eager"}}
SIMULATED = {**FAST, "simulate_graphs": True}


def small(step_mode, **kw):
    settings = dict(steps=4, batch_size=16, hidden_dim=8, latent_dim=3, n_critic=2, device="cpu",
                    n_eval_samples=200, step_mode=step_mode, lr_decay="linear", gp_every=2)
    settings.update(kw)
    return WGANGPConfig.for_dataset("ring8", **settings)


def _weights(t):
    return [v.clone() for v in (*t.generator.state_dict().values(),
                                *t.critic.state_dict().values())]


@pytest.mark.parametrize("setting", [
    {"method": "gp"}, {"method": "lp"}, {"method": "r1"}, {"method": "r2"},
    {"method": "dragan"}, {"method": "clip", "gp_every": 1}, {"method": "sn", "gp_every": 1},
    {"penalty_impl": "autograd"}, {"gp_every": 4, "lazy_adam_correction": True},
    {"precision": "bf16"}, {"precision": "fp16"},
    {"model": "pac", "pac": 2},
], ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_every_configuration_runs_its_critic_steps_through_criticstep(setting, monkeypatch):
    """The one road: each critic step of every configuration is a CriticStep call inside the
    TrainStep (counted), the generator step a GeneratorStep call, and training moves the
    weights. (torchrun: tests/train/test_distributed.py counts the same.)"""
    counts = {"critic": 0, "generator": 0}
    for cls, key in ((steps.CriticStep, "critic"), (steps.GeneratorStep, "generator")):
        run = cls.run

        def counting(self, *args, _run=run, _key=key, **kw):
            counts[_key] += 1
            return _run(self, *args, **kw)

        monkeypatch.setattr(cls, "run", counting)
    t = WGANGPTrainer(small("eager", steps=3, **setting))
    before = _weights(t)
    t.train()
    assert counts == {"critic": 3 * 2, "generator": 3}
    assert t.critic_iters == 6 and t.step_mode == "eager"
    assert all(map(math.isfinite, t.history["wasserstein"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, _weights(t)))
    if setting.get("method") == "clip":
        c = t.config.clip_value
        assert all(p.abs().max() <= c for p in t.critic.parameters())


def test_compile_mode_trains_and_checkpoints_plain_learning_rates(tmp_path):
    t = WGANGPTrainer(small("compile", out_dir=str(tmp_path)), step_options=FAST)
    t.train()
    assert t.step_mode == "compile" and t.critic_iters == 8
    assert all(len(v) == 4 and all(map(math.isfinite, v)) for v in t.history.values())
    state = WGANGPTrainer.read_checkpoint(str(tmp_path / "checkpoint.pt"))
    for opt in ("optimizer_c", "optimizer_g"):
        assert all(isinstance(g["lr"], float) for g in state[opt]["param_groups"])
    assert t.write_outputs()["step_mode"] == "compile"


def test_graph_mode_trains_as_the_compiled_mode():
    """The simulated graph mode replays the eager bodies; the compiled mode (aot_eager) runs the
    torch.func formulation with the same random draws in the same order: the same weights after
    four iterations with a decaying lr and lazy regularisation."""
    runs = {}
    for mode in ("compile", "graph"):
        t = WGANGPTrainer(small(mode), step_options=SIMULATED if mode == "graph" else FAST)
        t.train()
        runs[mode] = t
    assert runs["graph"].train_iteration.captures >= 1
    for a, b in zip(_weights(runs["compile"]), _weights(runs["graph"])):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    for k in runs["compile"].history:
        assert runs["compile"].history[k] == pytest.approx(runs["graph"].history[k], rel=1e-4,
                                                           abs=1e-6)


def test_compile_mode_resumes_exactly(tmp_path):
    whole = WGANGPTrainer(small("compile"), step_options=FAST)
    whole.train()
    first = WGANGPTrainer(small("compile", out_dir=str(tmp_path)), step_options=FAST)
    first.train(steps=2)  # the lr decay still runs to step 4
    resumed = WGANGPTrainer.from_checkpoint(str(tmp_path / "checkpoint.pt"), step_options=FAST)
    resumed.train()
    for a, b in zip(_weights(whole), _weights(resumed)):
        assert torch.equal(a, b)
    assert whole.history == resumed.history


@pytest.mark.parametrize("setting", [
    {"method": "clip", "gp_every": 1}, {"penalty_impl": "autograd"},
    {"precision": "fp16", "gp_every": 1}, {"gp_every": 3},
], ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_compile_mode_runs_what_the_eager_loop_runs(setting):
    """Weight clipping (a post-step hook), the plain-autograd penalty, fp16 with its
    GradScalers and lazy regularisation all run compiled too."""
    t = WGANGPTrainer(small("compile", steps=2, **setting), step_options=FAST)
    t.train()
    assert t.step_mode == "compile"
    assert all(map(math.isfinite, t.history["wasserstein"]))
    if setting.get("method") == "clip":
        assert all(p.abs().max() <= t.config.clip_value for p in t.critic.parameters())


@pytest.mark.parametrize("mode, setting, message", [
    ("compile", {"method": "sn", "gp_every": 1}, "spectral norm"),
    ("graph", {"precision": "fp16", "gp_every": 1}, "GradScaler"),
])
def test_configurations_a_mode_cannot_run_are_refused_before_training(mode, setting, message):
    with pytest.raises(ValueError, match=f"step_mode '{mode}' .*cannot run.*{message}"):
        WGANGPTrainer(small(mode, **setting), step_options=SIMULATED)
    # auto runs them eager, saying why once it has a device where graphs could run
    with pytest.warns(RuntimeWarning, match=f"runs eager.*{message}"):
        t = WGANGPTrainer(small("auto", steps=1, **setting), step_options=SIMULATED)
        t.train()
    assert t.step_mode == "eager"


def test_graph_mode_on_the_cpu_is_refused_before_training():
    with pytest.raises(ValueError, match="CUDA graphs need CUDA tensors"):
        WGANGPTrainer(small("graph"))


def test_cli_takes_the_step_mode_and_may_change_it_on_resume(tmp_path, capsys):
    out = str(tmp_path / "run")
    base = ["train", "--dataset", "ring8", "--steps", "2", "--batch", "16", "--hidden-dim", "8",
            "--latent-dim", "3", "--n-critic", "1", "--eval-samples", "200", "--device", "cpu",
            "--no-progress", "--out", out]
    assert cli.main(base + ["--step-mode", "compile"]) == 0
    assert "step mode compile" in capsys.readouterr().out
    assert cli.main(base[:4] + ["4"] + base[5:] + ["--resume", "--step-mode", "eager",
                                                   "--lr-decay-steps", "4"]) == 0
    assert WGANGPTrainer.read_checkpoint(f"{out}/checkpoint.pt")["step"] == 4
    with pytest.raises(SystemExit):
        cli.main(base + ["--step-mode", "fastest"])
    assert "invalid choice: 'fastest'" in capsys.readouterr().err
