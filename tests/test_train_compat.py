"""What keeps old code, old command lines and old checkpoints working: the import paths of what
moved into wgangp_fast.train (each gives the same objects as the new path and warns once per
process, checked in a fresh interpreter so that no other test has imported it first), the old
setting name gp_lambda (now lambda_gp) and the old penalty_impl value 'reference' (now
'autograd'), in code, on the command line and in a checkpoint written before the renames."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

from wgangp_fast import _compat, cli, train
from wgangp_fast.train import WGANGPConfig, WGANGPTrainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MOVED = {
    "wgangp_fast.models": ("wgangp_fast.train.models", "MLPCritic"),
    "wgangp_fast.data": ("wgangp_fast.train.data", "BatchSampler"),
    "wgangp_fast.metrics": ("wgangp_fast.train.metrics", "evaluate"),
    "wgangp_fast.distributed": ("wgangp_fast.train.distributed", "setup"),
}


def _run(code: str) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_module_path_gives_the_same_objects_and_warns_once(old):
    new, name = MOVED[old]
    parent, leaf = old.rsplit(".", 1)
    got = _run(f"""
        import importlib, json, warnings
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as caught:
            import {old} as first
            from {parent} import {leaf} as second
            from {old} import {name} as obj
            third = importlib.import_module("{old}")
        import {new} as new
        print(json.dumps({{
            "same": first is second is third is new and obj is new.{name},
            "warnings": [(w.category.__name__, str(w.message), w.filename) for w in caught],
        }}))
    """)
    assert got["same"]
    assert len(got["warnings"]) == 1, got["warnings"]
    category, message, filename = got["warnings"][0]
    assert category == "FutureWarning" and message.startswith(f"{old} moved to {new}")
    assert filename == "<string>"  # the warning names the importing code, not the shim


def test_the_package_itself_uses_no_old_path():
    got = _run("""
        import json, warnings
        warnings.simplefilter("error", FutureWarning)
        import wgangp_fast, wgangp_fast.train, wgangp_fast.cli, wgangp_fast.bench
        from wgangp_fast.bench import steps
        wgangp_fast.cli.build_parser()
        print(json.dumps({"ok": True}))
    """)
    assert got["ok"]


def test_the_old_trainer_module_gives_the_same_objects_and_warns_once():
    got = _run("""
        import json, warnings
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as caught:
            import wgangp_fast.trainer as old
            from wgangp_fast import trainer as again
            from wgangp_fast.trainer import WGANGPConfig, WGANGPTrainer, lock_output_folder
        import wgangp_fast.train as new
        from wgangp_fast.train import checkpoint, config, trainer
        names = ["WGANGPConfig", "WGANGPTrainer", "DATASET_PRESETS", "NonFiniteLossError",
                 "CheckpointError", "CheckpointWriteError", "OutputFolderError",
                 "TrainingInterrupted", "atomic_save", "check_checkpoint", "lock_output_folder",
                 "CHECKPOINT_NAME"]
        same = [getattr(old, n) is getattr(new, n) for n in names]
        same += [old.LOCK_NAME is checkpoint.LOCK_NAME, old.CHECKPOINT_FORMAT == 1,
                 old.METHODS is config.METHODS, old.HISTORY_KEYS is config.HISTORY_KEYS,
                 old.MAX_SKIPPED_IN_A_ROW is trainer.MAX_SKIPPED_IN_A_ROW,
                 old is again, WGANGPTrainer is new.WGANGPTrainer]
        star = {}
        exec("from wgangp_fast.trainer import *", star)
        print(json.dumps({
            "same": all(same), "star": sorted(k for k in star if not k.startswith("__")),
            "warnings": [(w.category.__name__, str(w.message), w.filename) for w in caught],
        }))
    """)
    assert got["same"]
    assert got["star"] == sorted(train.__all__)
    assert len(got["warnings"]) == 1, got["warnings"]
    category, message, filename = got["warnings"][0]
    assert category == "FutureWarning" and message.startswith(
        "wgangp_fast.trainer moved to wgangp_fast.train")
    assert filename == "<string>"


# -- renamed settings and values ------------------------------------------------------------

@pytest.fixture
def fresh_warnings(monkeypatch):
    """Each one-time warning fires again, and is recorded."""
    monkeypatch.setattr(_compat, "_WARNED", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def _messages(caught):
    return [str(w.message) for w in caught if w.category is FutureWarning]


def test_gp_lambda_is_still_accepted_with_one_warning(fresh_warnings):
    cfg = WGANGPConfig(gp_lambda=0.3)
    assert cfg.lambda_gp == 0.3 and cfg == WGANGPConfig(lambda_gp=0.3)
    assert WGANGPConfig.for_dataset("ring8", gp_lambda=0.2).lambda_gp == 0.2
    assert WGANGPConfig.for_dataset("ring8").lambda_gp == 0.1  # the preset's, by its new name
    assert WGANGPConfig.from_dict({"gp_lambda": 0.4}).lambda_gp == 0.4
    assert cfg.gp_lambda == 0.3
    cfg.gp_lambda = 0.5
    # saved configs carry the old name too, so an older wgangp_fast reads the weight instead of
    # its default; reading them back warns about nothing
    saved = cfg.to_dict()
    assert cfg.lambda_gp == saved["lambda_gp"] == saved["gp_lambda"] == 0.5
    assert WGANGPConfig.from_dict(saved) == cfg
    assert _messages(fresh_warnings) == [
        "WGANGPConfig's 'gp_lambda' is now 'lambda_gp', as the rest of wgangp_fast names it; "
        "'gp_lambda' still works, in code and in saved configs, but will be removed"]
    assert fresh_warnings[0].filename == __file__
    with pytest.raises(TypeError, match="gp_lambda is the old name of lambda_gp"):
        WGANGPConfig(gp_lambda=1.0, lambda_gp=2.0)


def test_penalty_impl_reference_is_still_accepted_with_one_warning(fresh_warnings):
    assert WGANGPConfig(penalty_impl="reference").penalty_impl == "autograd"
    assert WGANGPConfig.from_dict({"penalty_impl": "reference"}).penalty_impl == "autograd"
    cfg = WGANGPConfig()
    cfg.penalty_impl = "reference"
    assert cfg.validate().penalty_impl == "autograd"
    assert _messages(fresh_warnings) == [
        "penalty_impl 'reference' is now called 'autograd'; 'reference' still works, in code "
        "and in saved configs, but will be removed"]


def test_the_command_line_takes_both_names(fresh_warnings):
    parser = cli.build_parser()
    for flag in ("--lambda", "--lambda-gp"):
        assert parser.parse_args(["train", flag, "0.5"]).lambda_gp == 0.5
    assert parser.parse_args(["train", "--penalty-impl", "reference"]).penalty_impl == "autograd"
    assert parser.parse_args(["train", "--penalty-impl", "autograd"]).penalty_impl == "autograd"
    assert len(_messages(fresh_warnings)) == 1


SMALL = dict(steps=6, batch_size=16, hidden_dim=8, latent_dim=4, n_critic=2, device="cpu",
             n_eval_samples=200, lambda_gp=0.3, penalty_impl="autograd")


def _weights(t):
    return [v for m in (t.generator, t.critic) for v in m.state_dict().values()]


@pytest.mark.usefixtures("one_thread")
def test_a_checkpoint_saved_with_the_old_names_resumes_exactly(tmp_path, capsys):
    straight = WGANGPTrainer(WGANGPConfig.for_dataset("ring8", **SMALL))
    straight.train()
    out = tmp_path / "run"
    first = WGANGPTrainer(WGANGPConfig.for_dataset("ring8", out_dir=str(out), **SMALL))
    first.train(3)
    path = out / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    config = state["config"]
    config["gp_lambda"] = config.pop("lambda_gp")  # as a checkpoint written before the rename
    config["penalty_impl"] = "reference"
    torch.save(state, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        resumed = WGANGPTrainer.from_checkpoint(str(path))
    assert resumed.step == 3
    assert (resumed.config.lambda_gp, resumed.config.penalty_impl) == (0.3, "autograd")
    resumed.train()
    for a, b in zip(_weights(straight), _weights(resumed)):
        assert torch.equal(a, b)
    assert resumed.history == straight.history

    # the command line compares the settings it is given with the saved ones by their new names
    torch.save(state, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        assert cli.main(["train", "--out", str(out), "--resume", "--lambda-gp", "0.3",
                         "--penalty-impl", "autograd", "--no-progress"]) == 0
        assert torch.load(path, weights_only=True)["step"] == 6
        assert cli.main(["train", "--out", str(out), "--resume", "--lambda", "0.5",
                         "--no-progress"]) == 2
    assert "cannot change: lambda_gp" in capsys.readouterr().err
