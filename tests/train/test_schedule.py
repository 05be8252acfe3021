"""Resume with a new total: the learning-rate schedule continues as the original run's (its
horizon recorded in the checkpoint); a total past a linear decay's horizon is refused with a
one-line message saying how to extend the run (--lr-decay-steps N), which stretches the rest of
the decay from the current learning rate, with no jump."""

from __future__ import annotations

import json

import pytest
import torch

from wgangp_fast import cli
from wgangp_fast.train import WGANGPConfig, WGANGPTrainer, schedule

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--batch", "16", "--hidden-dim", "8", "--latent-dim", "4", "--n-critic", "1",
        "--eval-samples", "200", "--no-progress", "--device", "cpu", "--log-every", "1"]


def small(**kw):
    settings = dict(steps=6, batch_size=16, hidden_dim=8, latent_dim=4, n_critic=1,
                    device="cpu", n_eval_samples=200, lr_warmup=0)
    settings.update(kw)
    return WGANGPConfig.for_dataset("ring8", **settings)


def test_the_first_segment_is_the_old_formula_and_a_replan_is_continuous():
    for step in range(0, 12):
        assert schedule.decay_factor(step, 10) == max(0.0, 1.0 - step / 10)
    segment = schedule.replan(6, 10, schedule.FIRST_SEGMENT, 20)
    assert segment == (5, pytest.approx(0.5))
    assert schedule.decay_factor(5, 20, segment) == pytest.approx(0.5)
    values = [schedule.decay_factor(s, 20, segment) for s in range(5, 21)]
    assert all(a > b for a, b in zip(values, values[1:])) and values[-1] == 0
    with pytest.raises(ValueError, match="must be after step 5"):
        schedule.replan(6, 10, schedule.FIRST_SEGMENT, 5)


def test_a_finished_decayed_run_with_a_larger_total_is_refused_before_work(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--out", str(out), "--steps", "6", *TINY]) == 0
    before = sorted(p.name for p in out.iterdir())
    capsys.readouterr()
    assert cli.main(["train", "--out", str(out), "--resume", "--steps", "12",
                     "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("wgangp-fast: error: steps 12 (--steps) runs past step 6, where the "
                          "linear learning-rate decay reaches 0")
    assert "pass --lr-decay-steps 12 (or more)" in err and "without a jump" in err
    assert sorted(p.name for p in out.iterdir()) == before
    assert WGANGPTrainer.read_checkpoint(str(out / "checkpoint.pt"))["step"] == 6
    with pytest.raises(ValueError, match="runs past step 6"):
        WGANGPTrainer.from_checkpoint(str(out / "checkpoint.pt"), steps=12)


def test_extending_a_finished_decayed_ring8_run_logs_no_jump_in_the_lr(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--out", str(out), "--steps", "20", "--lr-warmup", "0",
                     *TINY]) == 0
    assert cli.main(["train", "--out", str(out), "--resume", "--steps", "40",
                     "--lr-decay-steps", "40", "--no-progress", "--log-every", "1"]) == 0
    lr = [float(row.split(",")[6]) for row in
          (out / "history.csv").read_text().splitlines()[1:]]
    assert len(lr) == 40
    base = 1e-2  # the ring8 preset's lr
    assert lr[19] == pytest.approx(base / 20, rel=1e-5)  # the last step of the first run: 1 - 19/20
    # the resumed steps go on from there, down to 0 at step 40: no jump (the old code restarted
    # the schedule at base * (1 - 20/40), 10x the last rate)
    assert lr[20] == pytest.approx(base / 20 * 20 / 21, rel=1e-5)
    # linear from there: equal steps down, none larger than the first run's last ones
    drops = [a - b for a, b in zip(lr[19:], lr[20:])]
    assert drops == pytest.approx([base / 20 / 21] * 20, rel=1e-3)
    assert drops[0] <= lr[18] - lr[19]
    assert lr[39] == pytest.approx(base / 20 / 21, rel=1e-3)  # 0 at step 40
    config = json.loads((out / "config.json").read_text())
    assert config["steps"] == 40 and config["lr_decay_steps"] == 40


def test_a_run_planned_ahead_resumes_exactly_as_the_uninterrupted_one(tmp_path):
    straight = WGANGPTrainer(small(steps=8, lr_decay_steps=8))
    straight.train()
    first = WGANGPTrainer(small(steps=4, lr_decay_steps=8, out_dir=str(tmp_path)))
    first.train()
    state = WGANGPTrainer.read_checkpoint(str(tmp_path / "checkpoint.pt"))
    assert state["config"]["lr_decay_steps"] == 8
    second = WGANGPTrainer.from_checkpoint(str(tmp_path / "checkpoint.pt"), steps=8)
    second.train()
    assert second.history["lr_g"] == straight.history["lr_g"]
    assert second.history["wasserstein"] == straight.history["wasserstein"]
    for a, b in zip(second.generator.parameters(), straight.generator.parameters()):
        assert torch.equal(a, b)


def test_the_horizon_of_a_checkpoint_that_did_not_record_it_is_its_steps(tmp_path):
    t = WGANGPTrainer(small(steps=4, out_dir=str(tmp_path)))
    t.train()
    path = str(tmp_path / "checkpoint.pt")
    state = torch.load(path, weights_only=True)
    del state["config"]["lr_decay_steps"], state["lr_schedule"]
    torch.save(state, path)
    with pytest.raises(ValueError, match="runs past step 4"):
        WGANGPTrainer.from_checkpoint(path, steps=6)
    resumed = WGANGPTrainer.from_checkpoint(path, steps=6, lr_decay_steps=6)
    assert resumed.learning_rates(4)[0] == pytest.approx(1e-2 * 0.25 * (6 - 4) / (6 - 3))


def test_a_run_without_a_decay_resumes_with_any_total(tmp_path):
    t = WGANGPTrainer(small(steps=3, lr_decay="none", lr_warmup=0, out_dir=str(tmp_path)))
    t.train()
    resumed = WGANGPTrainer.from_checkpoint(str(tmp_path / "checkpoint.pt"), steps=6)
    resumed.train()
    assert resumed.history["lr_g"] == [1e-2] * 6
    with pytest.raises(ValueError, match="lr_decay_steps .* lr_decay 'none' does not use it"):
        WGANGPTrainer.from_checkpoint(str(tmp_path / "checkpoint.pt"), steps=6,
                                      lr_decay_steps=9)
