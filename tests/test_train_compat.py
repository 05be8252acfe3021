"""The old import paths of what moved into wgangp_fast.train: each still imports, gives the same
objects as the new path, and warns once per process (in a fresh interpreter, so that no other
test has imported it first)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from wgangp_fast import train

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
