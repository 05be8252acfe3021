"""The command line: `train` end to end on tiny settings, --resume, the `bench` delegation, and
clear errors for bad arguments and bad data files."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest
import torch

from wgangp_fast import cli


@pytest.fixture(autouse=True)
def _one_thread():
    # These models are tiny: one intra-op thread is fastest, and on a busy machine extra OpenMP
    # threads spin against each other and slow every op down many times.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY = ["--steps", "2", "--batch", "16", "--hidden-dim", "8", "--latent-dim", "4", "--n-critic",
        "1", "--eval-samples", "200", "--no-progress", "--device", "cpu"]


def _train(out, *extra):
    return cli.main(["train", "--out", str(out), *TINY, *extra])


def test_train_writes_every_output(tmp_path, capsys):
    out = tmp_path / "ring"
    assert _train(out) == 0
    for name in ("samples.npy", "samples.png", "curves.png", "metrics.json", "history.csv",
                 "config.json", "checkpoint.pt"):
        assert (out / name).is_file(), name
    printed = capsys.readouterr().out
    assert "modes_covered" in printed and str(out) in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["modes_total"] == 8
    config = json.loads((out / "config.json").read_text())
    assert config["batch_size"] == 16 and config["dataset"] == "ring8"


def test_resume_continues_the_saved_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, "--checkpoint-every", "1") == 0
    assert cli.main(["train", "--out", str(out), "--resume", "--steps", "3", "--no-progress"]) == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] == 3 and len(state["history"]["loss_c"]) == 3
    assert "resumed at step 2" in capsys.readouterr().out
    assert cli.main(["train", "--out", str(out), "--resume", "--lr", "0.5"]) == 2
    assert "cannot change: lr" in capsys.readouterr().err


def test_ema_and_batchnorm_flags(tmp_path, capsys):
    out = tmp_path / "ema"
    assert _train(out, "--ema-decay", "0.9", "--no-generator-batchnorm") == 0
    config = json.loads((out / "config.json").read_text())
    assert config["ema_decay"] == 0.9 and config["generator_batchnorm"] is False
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ema_decay"] == 0.9 and "high_quality_share" in metrics["raw_generator"]
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert set(state["generator_ema"]) == set(state["generator"])
    assert not any("BatchNorm" in k for k in state["generator"])
    assert "EMA 0.9" in capsys.readouterr().out
    assert cli.main(["train", "--out", str(out), "--resume", "--ema-decay", "0.5"]) == 2
    assert "cannot change: ema_decay" in capsys.readouterr().err
    assert _train(tmp_path / "bn", "--ema-decay", "0", "--generator-batchnorm") == 0
    state = torch.load(tmp_path / "bn" / "checkpoint.pt", weights_only=True)
    assert "generator_ema" not in state
    assert any(k.endswith("running_mean") for k in state["generator"])


def test_resume_without_a_checkpoint(tmp_path, capsys):
    assert cli.main(["train", "--out", str(tmp_path / "empty"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint at" in err and "empty" in err


def test_csv_option(tmp_path, capsys):
    table = tmp_path / "t.csv"
    table.write_text("a,b\n" + "".join(f"{i},{'xy'[i % 2]}\n" for i in range(30)))
    out = tmp_path / "tab"
    assert cli.main(["train", "--csv", str(table), "--out", str(out), "--pac", "2", "--batch",
                     "8", "--steps", "1", "--hidden-dim", "8", "--n-critic", "1",
                     "--eval-samples", "100", "--no-progress"]) == 0
    assert (out / "samples.csv").read_text().startswith("a,b\n")


@pytest.mark.parametrize("argv,match", [
    (["train", "--steps", "-1"], "--steps: expected an integer >= 0"),
    (["train", "--batch", "0"], "--batch: expected a positive integer"),
    (["train", "--steps", "ten"], "--steps: expected an integer >= 0, got 'ten'"),
    (["train", "--lr", "abc"], "--lr: expected a finite positive number, got 'abc'"),
    (["train", "--lr", "inf"], "--lr: expected a finite positive number, got inf"),
    (["train", "--lr", "nan"], "--lr: expected a finite positive number, got nan"),
    (["train", "--dataset", "cifar"], "invalid choice: 'cifar'"),
    (["train", "--method", "wgan"], "invalid choice: 'wgan'"),
    (["train", "--ema-decay", "-0.1"], "--ema-decay: expected a finite number >= 0"),
    (["fly"], "invalid choice: 'fly'"),
    ([], "required"),
])
def test_bad_arguments_exit_2_with_a_message(argv, match, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert match in capsys.readouterr().err


@pytest.mark.parametrize("argv,match", [
    (["--csv", "{tmp}/missing.csv"], "CSV file not found: {tmp}/missing.csv"),
    (["--images", "{tmp}/bad.npy"], "{tmp}/bad.npy: cannot read"),
    (["--mnist", "{tmp}"], "no MNIST training images"),
    (["--csv", "{tmp}/a.csv", "--images", "{tmp}/b.npy"], "only one of"),
    (["--dataset", "csv"], "needs a path"),
    (["--batch", "10", "--pac", "3", "--model", "pac"], "multiple of pac"),
    (["--dataset", "ring8", "--model", "conv"], "needs image data"),
    (["--ema-decay", "1"], "ema_decay must be in [0, 1)"),
])
def test_bad_settings_and_files_are_clear_errors(tmp_path, argv, match, capsys):
    (tmp_path / "bad.npy").write_text("not numpy")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code = cli.main(["train", "--out", str(tmp_path / "o"), "--no-progress", *argv])
    assert code == 2
    assert match.replace("{tmp}", str(tmp_path)) in capsys.readouterr().err


def test_non_finite_loss_exits_1(tmp_path, capsys, monkeypatch):
    from wgangp_fast.trainer import WGANGPTrainer

    real_step = WGANGPTrainer._critic_step

    def poisoned(self, real):
        out = real_step(self, real)
        if self.step == 1:
            out["loss_c"] = out["loss_c"] * float("nan")
        return out

    monkeypatch.setattr(WGANGPTrainer, "_critic_step", poisoned)
    out = tmp_path / "nan"
    assert _train(out, "--checkpoint-every", "1") == 1
    err = capsys.readouterr().err
    assert "non-finite loss at step 2" in err and "last good checkpoint" in err
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 1


def test_bench_is_delegated(monkeypatch):
    seen = {}

    def fake_main(argv):
        seen["argv"] = argv
        return 7

    monkeypatch.setitem(sys.modules, "wgangp_fast.bench", types.SimpleNamespace(main=fake_main))
    assert cli.main(["bench", "--quick", "--op", "interpolate"]) == 7
    assert seen["argv"] == ["--quick", "--op", "interpolate"]


def test_python_dash_m_entry_point():
    done = subprocess.run([sys.executable, "-m", "wgangp_fast", "train", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert "--checkpoint-every" in done.stdout and "--resume" in done.stdout
