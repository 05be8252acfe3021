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
