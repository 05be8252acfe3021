"""The command line: `train` end to end on tiny settings, --resume, the `bench` delegation, and
clear errors for bad arguments and bad data files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from wgangp_fast import cli

pytestmark = pytest.mark.usefixtures("one_thread")


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
    # the ring8 preset decays its lr to 0 at its last step: a larger total moves that horizon
    assert cli.main(["train", "--out", str(out), "--resume", "--steps", "3", "--no-progress",
                     "--lr-decay-steps", "3"]) == 0
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
    (["--mnist", "{tmp}"], "no mnist training files"),
    (["--images", "{tmp}/missing"], "--images {tmp}/missing: no such folder or file"),
    (["--images", "{tmp}/empty"], "{tmp}/empty: the folder holds no image files"),
    (["--conditional"], "--conditional needs a labelled dataset"),
    (["--dataset", "digits", "--label-column", "x"], "label_column (--label-column)"),
    (["--csv", "{tmp}/a.csv", "--images", "{tmp}/b.npy"], "only one of"),
    (["--dataset", "csv"], "needs a path"),
    (["--batch", "10", "--pac", "3", "--model", "pac"], "multiple of pac"),
    (["--dataset", "ring8", "--model", "conv"], "needs image data"),
    (["--ema-decay", "1"], "ema_decay must be in [0, 1)"),
])
def test_bad_settings_and_files_are_clear_errors(tmp_path, argv, match, capsys):
    (tmp_path / "bad.npy").write_text("not numpy")
    (tmp_path / "empty").mkdir()
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code = cli.main(["train", "--out", str(tmp_path / "o"), "--no-progress", *argv])
    assert code == 2
    assert match.replace("{tmp}", str(tmp_path)) in capsys.readouterr().err


def test_non_finite_loss_exits_1(tmp_path, capsys, monkeypatch):
    from wgangp_fast import steps

    real_call = steps.TrainStep.__call__
    calls = []

    def poisoned(self, reals):
        stats = real_call(self, reals)
        calls.append(None)
        if len(calls) == 2:  # the second iteration: step 2
            stats = stats._replace(critic=stats.critic._replace(
                loss=stats.critic.loss * float("nan")))
        return stats

    monkeypatch.setattr(steps.TrainStep, "__call__", poisoned)
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


# -- checks made before any training work ---------------------------------------------------

def _nothing_trained(out):
    """No checkpoint and no outputs: the run stopped before its first step."""
    return not out.exists() or not any(p.name == "checkpoint.pt" or not p.name.startswith(".")
                                       for p in out.iterdir())


def test_a_missing_optional_package_is_named_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an absent package looks like
    out = tmp_path / "run"
    assert _train(out) == 2
    err = capsys.readouterr().err
    assert "needs optional packages that are not installed: matplotlib (the pictures" in err
    assert "pip install 'wgangp_fast[train]'" in err
    assert not out.exists()


def test_a_missing_tqdm_is_only_needed_for_the_progress_bar(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    argv = [a for a in TINY if a != "--no-progress"]
    assert cli.main(["train", "--out", str(tmp_path / "bar"), *argv]) == 2
    assert "tqdm (the progress bar, or pass --no-progress)" in capsys.readouterr().err
    assert _train(tmp_path / "nobar") == 0


def test_the_backend_is_checked_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        _train(tmp_path / "a", "--backend", "fastest")
    assert info.value.code == 2
    assert "--backend: invalid choice: 'fastest'" in capsys.readouterr().err
    out = tmp_path / "b"
    assert _train(out, "--backend", "cuda") == 2  # --device cpu: cuda never takes CPU tensors
    err = capsys.readouterr().err
    assert "backend 'cuda' (--backend) cannot compute the penalty on cpu" in err
    assert "Available here: cpu, reference" in err
    assert _nothing_trained(out)


def test_an_output_folder_that_cannot_be_created_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert _train(tmp_path / "file" / "run") == 2
    err = capsys.readouterr().err
    assert f"--out {tmp_path / 'file' / 'run'}: cannot create the output folder" in err


def test_an_unwritable_output_folder_is_refused(tmp_path, capsys, monkeypatch):
    from wgangp_fast.train import folder as folder_mod

    out = tmp_path / "ro"
    out.mkdir()
    real_access = os.access
    monkeypatch.setattr(folder_mod.os, "access",
                        lambda p, mode: False if str(p) == str(out) else real_access(p, mode))
    assert _train(out) == 2
    assert f"--out {out}: the folder is not writable" in capsys.readouterr().err
    assert list(out.iterdir()) == []


def test_a_full_output_folder_is_refused_before_training(tmp_path, capsys, monkeypatch):
    from wgangp_fast.train import folder as folder_mod

    usage = types.SimpleNamespace(total=2 ** 30, used=2 ** 30 - 4096, free=4096)
    monkeypatch.setattr(folder_mod.shutil, "disk_usage", lambda path: usage)
    out = tmp_path / "full"
    assert _train(out) == 2
    err = capsys.readouterr().err
    assert f"--out {out}: 0.0 MB free on its filesystem, but a checkpoint of this run needs " \
           f"about" in err
    assert _nothing_trained(out)


def _write_to_a_full_disk(monkeypatch, after=0):
    """torch.save fails as on a full disk (writing to /dev/full) after `after` good saves."""
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full to produce a real ENOSPC")
    real_save = torch.save
    calls = {"n": 0}

    def save(obj, f, *args, **kw):
        calls["n"] += 1
        if calls["n"] <= after:
            return real_save(obj, f, *args, **kw)
        with open("/dev/full", "wb") as full:
            return real_save(obj, full, *args, **kw)

    monkeypatch.setattr(torch, "save", save)


def test_no_space_left_is_said_in_the_first_line_and_the_good_checkpoint_kept(
        tmp_path, capsys, monkeypatch):
    _write_to_a_full_disk(monkeypatch, after=2)  # the step-0 and step-1 checkpoints succeed
    out = tmp_path / "run"
    assert _train(out, "--checkpoint-every", "1") == 1
    err = capsys.readouterr().err
    first = err.strip().splitlines()[-2]
    assert first.startswith("wgangp-fast: error: [Errno 28] cannot write the checkpoint")
    assert "No space left on device" in first and "the previous checkpoint is kept" in first
    assert err.strip().splitlines()[-1] == f"last good checkpoint: {out / 'checkpoint.pt'} (step 1)"
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "history.csv"]
    # the live log holds the step whose checkpoint could not be written too
    assert (out / "history.csv").read_text().splitlines()[-1].startswith("2,")


@pytest.mark.parametrize("extra, match", [
    (["--batch", "1", "--generator-batchnorm"],
     "batch_size 1 is too small for the MLPGenerator's BatchNorm layers"),
    (["--images", "{tmp}/layout.npy", "--model", "mlp"],
     "a 4-D image array needs its channels (1, 3 or 4)"),
    (["--csv", "{tmp}/one.csv", "--pac", "1"], "the table has a single data row"),
    (["--csv", "{tmp}/nan.csv", "--pac", "1"], "numeric column 'a' holds 'inf' on line 3"),
])
def test_bad_data_and_settings_stop_before_training(tmp_path, capsys, extra, match):
    np.save(tmp_path / "layout.npy", np.zeros((10, 5, 8, 8), dtype=np.float32))
    (tmp_path / "one.csv").write_text("a,b\n1.5,x\n")
    (tmp_path / "nan.csv").write_text("a,b\n1.5,x\ninf,y\n2,x\n")
    out = tmp_path / "run"
    assert _train(out, *[a.replace("{tmp}", str(tmp_path)) for a in extra]) == 2
    assert match in capsys.readouterr().err
    assert not out.exists()  # no folder left behind by a refused start


# -- --resume on checkpoints that cannot continue, and a folder in use ----------------------

@pytest.mark.parametrize("spoil, match", [
    (lambda path: torch.save(torch.zeros(3), path), "not a wgangp_fast checkpoint (it holds a "
                                                    "Tensor"),
    (lambda path: torch.save({"step": 2, "weights": {}}, path), "a dict without format, config"),
    (lambda path: _poison(path, "critic"), "holds NaN or infinite values (critic."),
    (lambda path: _poison(path, "optimizer_c"), "holds NaN or infinite values (optimizer_c.state."),
])
def test_resume_refuses_a_checkpoint_that_cannot_continue(tmp_path, capsys, spoil, match):
    out = tmp_path / "run"
    assert _train(out) == 0
    spoil(out / "checkpoint.pt")
    capsys.readouterr()
    assert cli.main(["train", "--out", str(out), "--resume", "--steps", "4", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
    assert err.startswith(f"wgangp-fast: error: {out / 'checkpoint.pt'}: ")


def _poison(path, part):
    state = torch.load(path, weights_only=True)
    tensors = (state[part].values() if part != "optimizer_c"
               else state[part]["state"][0].values())
    next(t for t in tensors if t.is_floating_point() and t.numel() > 1).view(-1)[0] = float("nan")
    torch.save(state, path)


def test_resume_after_a_category_was_added_to_the_csv(tmp_path, capsys):
    table = tmp_path / "t.csv"
    table.write_text("a,b\n" + "".join(f"{i},{'xy'[i % 2]}\n" for i in range(30)))
    out = tmp_path / "tab"
    args = ["--csv", str(table), "--out", str(out), "--no-progress"]
    assert cli.main(["train", *args, "--pac", "2", "--batch", "8", "--steps", "1",
                     "--hidden-dim", "8", "--n-critic", "1", "--eval-samples", "100"]) == 0
    with open(table, "a") as f:
        f.write("31,z\n")
    capsys.readouterr()
    assert cli.main(["train", *args, "--resume", "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "column 'b' had the categories ['x', 'y'] and now has ['x', 'y', 'z']" in err


def test_a_second_run_on_the_same_out_is_refused_with_the_holders_pid(tmp_path, capsys):
    out = tmp_path / "busy"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom wgangp_fast.train import "
         "lock_output_folder\nlock_output_folder(sys.argv[1])\nprint('locked', flush=True)\n"
         "time.sleep(600)\n", str(out)], env=env, cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert _train(out) == 2
        err = capsys.readouterr().err
        assert f"--out {out} is in use by another wgangp-fast run (pid {holder.pid} on" in err
        assert not (out / "checkpoint.pt").exists()
    finally:
        holder.kill()
        holder.wait()
    assert _train(out) == 0  # the dead holder's lock is taken over
    assert f"took over the lock of an earlier run on {out} (pid {holder.pid}" in \
        capsys.readouterr().err
