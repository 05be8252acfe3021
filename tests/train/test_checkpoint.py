"""Checkpoints whose sampler, RNG or optimiser entries are damaged, or whose config holds a
setting this version does not know: refused at load, before any step, in one line that names
the entry and what was expected; a refused checkpoint leaves the trainer as it was."""

from __future__ import annotations

import copy

import pytest
import torch

from wgangp_fast import cli
from wgangp_fast.train import WGANGPConfig, WGANGPTrainer, checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(out, **kw):
    settings = dict(steps=2, batch_size=16, hidden_dim=8, latent_dim=4, n_critic=2,
                    device="cpu", n_eval_samples=200, out_dir=str(out))
    settings.update(kw)
    return WGANGPConfig.for_dataset("ring8", **settings)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(path, state) of a checkpoint after two steps of a tiny ring8 run."""
    out = tmp_path_factory.mktemp("run")
    trainer = WGANGPTrainer(_config(out))
    trainer.train()
    path = str(out / checkpoint.CHECKPOINT_NAME)
    return path, torch.load(path, weights_only=True)


def _set(path, value):
    """state -> None, setting the entry at `path` (keys and indices) to `value` (or deleting
    it, for value _DELETE)."""
    def change(state):
        *head, last = path
        target = state
        for key in head:
            target = target[key]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value(target[last]) if callable(value) else value
    return change


_DELETE = object()

DAMAGE = {
    "sampler-empty": (_set(("sampler",), {}), ["sampler.generator", "absent"]),
    "sampler-short": (_set(("sampler", "generator"), lambda t: t[:100]),
                      ["sampler.generator", "5056", "100"]),
    "sampler-float": (_set(("sampler", "generator"), lambda t: t.float()),
                      ["sampler.generator", "uint8", "float32"]),
    "rng-torch-short": (_set(("rng", "torch"), lambda t: t[:12]), ["rng.torch", "5056"]),
    "rng-numpy-absent": (_set(("rng", "numpy"), _DELETE), ["rng.numpy", "absent"]),
    "rng-numpy-keys": (_set(("rng", "numpy", "keys"), lambda t: t[:600]),
                       ["rng.numpy", "624"]),
    "rng-numpy-gauss-absent": (_set(("rng", "numpy", "has_gauss"), _DELETE),
                               ["rng.numpy.has_gauss", "absent"]),
    "rng-numpy-pos": (_set(("rng", "numpy", "pos"), 9999), ["rng.numpy.pos", "9999", "624"]),
    "rng-python-state": (_set(("rng", "python", "state"), lambda t: t[:300]),
                         ["rng.python", "625"]),
    "rng-cuda-float": (_set(("rng", "cuda"), [torch.zeros(16)]), ["rng.cuda[0]", "uint8"]),
    "ranks-sampler": (lambda s: s.update(ranks=[{"rng": s["rng"], "sampler": {}}]),
                      ["ranks[0].sampler.generator", "absent"]),
    "moment-shape": (_set(("optimizer_c", "state", 0, "exp_avg"), lambda t: t[:3]),
                     ["optimizer_c.state.0.exp_avg", "[3, 2]", "its parameter's shape ["]),
    "moment-absent": (_set(("optimizer_g", "state", 1, "exp_avg_sq"), _DELETE),
                      ["optimizer_g.state.1", "exp_avg_sq"]),
    "moment-foreign-param": (lambda s: s["optimizer_c"]["state"].update(
        {99: s["optimizer_c"]["state"][0]}), ["optimizer_c.state.99", "no parameter 99"]),
    "moment-step": (_set(("optimizer_c", "state", 0, "step"), torch.zeros(3)),
                    ["optimizer_c.state.0.step", "one value"]),
    "param-groups": (_set(("optimizer_g", "param_groups", 0, "params"), lambda p: p[:-1]),
                     ["optimizer_g.param_groups[0]", "parameters"]),
    "state-not-dict": (_set(("optimizer_c", "state"), [1, 2]), ["optimizer_c.state", "dict"]),
}


@pytest.mark.parametrize("name", list(DAMAGE))
def test_a_damaged_entry_is_refused_at_load_naming_it(saved, tmp_path, name):
    path, state = saved
    damage, words = DAMAGE[name]
    bad = copy.deepcopy(state)
    damage(bad)
    bad_path = str(tmp_path / "bad.pt")
    torch.save(bad, bad_path)
    with pytest.raises(checkpoint.CheckpointError) as info:
        WGANGPTrainer.from_checkpoint(bad_path, out_dir=str(tmp_path / "out"))
    message = str(info.value)
    assert "\n" not in message
    for word in [bad_path, *words]:
        assert word in message, f"{word!r} not in {message!r}"


@pytest.mark.parametrize("name", ["sampler-empty", "rng-torch-short", "moment-shape"])
def test_a_refused_checkpoint_changes_nothing(saved, tmp_path, name):
    _, state = saved
    bad = copy.deepcopy(state)
    DAMAGE[name][0](bad)
    trainer = WGANGPTrainer(_config(tmp_path, seed=5))
    before = {k: v.clone() for k, v in trainer.critic.state_dict().items()}
    sampler_before = trainer.sampler.state_dict()["generator"].clone()
    rng_before = torch.get_rng_state()
    with pytest.raises(checkpoint.CheckpointError):
        trainer.load_state_dict(bad, "bad.pt")
    assert trainer.step == 0 and not trainer.optimizer_c.state
    assert all(torch.equal(v, before[k]) for k, v in trainer.critic.state_dict().items())
    assert torch.equal(trainer.sampler.state_dict()["generator"], sampler_before)
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_an_intact_checkpoint_still_resumes(saved, tmp_path):
    path, _ = saved
    trainer = WGANGPTrainer.from_checkpoint(path, out_dir=str(tmp_path), steps=3,
                                            lr_decay_steps=3)
    assert trainer.step == 2
    trainer.train()
    assert trainer.step == 3


def test_an_unknown_setting_in_the_saved_config_is_refused(saved, tmp_path):
    # A setting this version does not know was written by another version: resuming without it
    # would continue the run with settings other than the checkpoint's.
    _, state = saved
    bad = copy.deepcopy(state)
    bad["config"]["gp_centre"] = 0.5
    bad_path = str(tmp_path / "bad.pt")
    torch.save(bad, bad_path)
    with pytest.raises(checkpoint.CheckpointError) as info:
        WGANGPTrainer.from_checkpoint(bad_path)
    message = str(info.value)
    assert "\n" not in message
    for word in (bad_path, "gp_centre", "0.5", "another version"):
        assert word in message, f"{word!r} not in {message!r}"
    with pytest.raises(ValueError, match="unknown setting 'gp_centre'"):
        WGANGPConfig.from_dict(bad["config"])


def test_the_cli_refuses_a_damaged_sampler_before_any_step(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--out", str(out), "--steps", "2", "--batch", "16", "--hidden-dim", "8",
            "--latent-dim", "4", "--n-critic", "1", "--no-progress", "--threads", "1"]
    assert cli.main(args) == 0
    ckpt = out / checkpoint.CHECKPOINT_NAME
    state = torch.load(ckpt, weights_only=True)
    state["sampler"] = {}
    torch.save(state, ckpt)
    capsys.readouterr()
    assert cli.main(["train", "--out", str(out), "--resume", "--steps", "4",
                     "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert "resumed at step" not in captured.out
    assert captured.err.startswith(f"wgangp-fast: error: {ckpt}: ")
    assert "sampler.generator" in captured.err and "Traceback" not in captured.err
    assert len(captured.err.strip().splitlines()) == 1
