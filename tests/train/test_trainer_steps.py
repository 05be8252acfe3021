"""The trainer's step modes (--step-mode): whole iterations through wgangp_fast.steps.TrainStep,
the same training in the compiled and (simulated) graph modes, exact resume, learning-rate
decay, and the configurations each mode refuses before training."""

from __future__ import annotations

import math

import pytest
import torch

from wgangp_fast import cli, steps
from wgangp_fast.train import WGANGPConfig, WGANGPTrainer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _cheap_compiles(monkeypatch):
    # aot_eager: dynamo and AOTAutograd without inductor's code generation (seconds, not tens);
    # it runs the random ops eagerly in program order, as the graph simulation does
    monkeypatch.setattr(steps, "DEFAULT_COMPILE_OPTIONS", {"backend": "aot_eager"})


def small(step_mode, **kw):
    settings = dict(steps=4, batch_size=16, hidden_dim=8, latent_dim=3, n_critic=2, device="cpu",
                    n_eval_samples=200, step_mode=step_mode, lr_decay="linear", gp_every=2)
    settings.update(kw)
    return WGANGPConfig.for_dataset("ring8", **settings)


def _weights(t):
    return [v.clone() for v in (*t.generator.state_dict().values(),
                                *t.critic.state_dict().values())]


def test_compile_mode_trains_and_checkpoints_plain_learning_rates(tmp_path):
    t = WGANGPTrainer(small("compile", out_dir=str(tmp_path)))
    t.train()
    assert t.step_mode == "compile" and t.critic_iters == 8
    assert all(len(v) == 4 and all(map(math.isfinite, v)) for v in t.history.values())
    state = WGANGPTrainer.read_checkpoint(str(tmp_path / "checkpoint.pt"))
    for opt in ("optimizer_c", "optimizer_g"):
        assert all(isinstance(g["lr"], float) for g in state[opt]["param_groups"])
    assert t.write_outputs()["step_mode"] == "compile"


def test_graph_mode_trains_as_the_compiled_mode(monkeypatch):
    """The simulated graph mode replays the eager bodies; the compiled mode (aot_eager) runs the
    torch.func formulation with the same random draws in the same order: the same weights after
    four iterations with a decaying lr and lazy regularisation."""
    runs = {}
    for mode in ("compile", "graph"):
        monkeypatch.setattr(steps, "_SIMULATE_GRAPHS", mode == "graph")
        t = WGANGPTrainer(small(mode))
        t.train()
        runs[mode] = t
    assert runs["graph"].train_iteration.captures >= 1
    for a, b in zip(_weights(runs["compile"]), _weights(runs["graph"])):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    for k in runs["compile"].history:
        assert runs["compile"].history[k] == pytest.approx(runs["graph"].history[k], rel=1e-4,
                                                           abs=1e-6)


def test_compile_mode_resumes_exactly(tmp_path):
    whole = WGANGPTrainer(small("compile"))
    whole.train()
    first = WGANGPTrainer(small("compile", out_dir=str(tmp_path)))
    first.train(steps=2)  # the lr decay still runs to step 4
    resumed = WGANGPTrainer.from_checkpoint(str(tmp_path / "checkpoint.pt"))
    resumed.train()
    for a, b in zip(_weights(whole), _weights(resumed)):
        assert torch.equal(a, b)
    assert whole.history == resumed.history


@pytest.mark.parametrize("setting, message", [
    ({"method": "clip", "gp_every": 1}, "method 'clip'"),
    ({"method": "sn", "gp_every": 1}, "method 'sn'"),
    ({"penalty_impl": "autograd"}, "penalty_impl 'autograd'"),
    ({"separate_backward": True}, "separate_backward"),
    ({"precision": "fp16", "gp_every": 1}, "precision fp16"),
])
def test_configurations_the_steps_cannot_run_are_refused(setting, message):
    with pytest.raises(ValueError, match=f"step_mode 'compile' cannot run.*{message}"):
        small("compile", **setting).validate()
    # auto keeps the eager loop for them
    assert WGANGPTrainer(small("auto", **setting)).train_iteration is None


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
    assert cli.main(base[:4] + ["4"] + base[5:] + ["--resume", "--step-mode", "eager"]) == 0
    assert WGANGPTrainer.read_checkpoint(f"{out}/checkpoint.pt")["step"] == 4
    with pytest.raises(SystemExit):
        cli.main(base + ["--step-mode", "fastest"])
    assert "invalid choice: 'fastest'" in capsys.readouterr().err
