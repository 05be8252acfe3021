"""The module paths that moved still import: each warns once (a FutureWarning naming the new
path, attributed to the importing line) and gives the new module's objects. Run in a fresh
interpreter, since any test before this one may have imported an old path already."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PROBE = r"""
import importlib, json, sys, warnings

paths, renamed = json.loads(sys.argv[1])
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as at_import:
    import wgangp_fast
    for new in paths.values():
        importlib.import_module(new)
result = {"package": wgangp_fast.__file__, "new_paths_warned": [str(w.message) for w in at_import]}
for old, new in paths.items():
    with warnings.catch_warnings(record=True) as first:
        module = importlib.import_module(old)
    with warnings.catch_warnings(record=True) as again:
        importlib.import_module(old)
        exec(f"import {old}", {})
        parent, leaf = old.rsplit(".", 1)
        exec(f"from {parent} import {leaf}", {})
    target = importlib.import_module(new)
    public = [n for n in vars(target) if not n.startswith("_")
              and getattr(vars(target)[n], "__module__", None) == new]
    result[old] = {
        "first": [(w.category.__name__, str(w.message), w.filename) for w in first],
        "again": len(again),
        "same_module": module is target,
        "public": public,
        "missing": [n for n in public if renamed.get(n, n) not in vars(module)],
        "different": [n for n in public
                      if getattr(module, renamed.get(n, n), None) is not getattr(target, n)],
    }
print(json.dumps(result))
"""

ALIASES = {"wgangp_fast.triton_kernels": "wgangp_fast.backends.triton",
           "wgangp_fast.backends.eager": "wgangp_fast.backends.reference"}
PATHS = dict(ALIASES, **{"wgangp_fast.reference": "wgangp_fast.testing"})
# wgangp_fast.reference keeps its old names for the two functions testing.py renamed.
RENAMED = {"autograd_interpolate": "interpolate",
           "autograd_gradient_norm_penalty": "gradient_norm_penalty"}


@pytest.fixture(scope="module")
def seen():
    pytest.importorskip("triton")
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps([PATHS, RENAMED])], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["package"].startswith(str(ROOT))
    return out


def test_the_package_and_the_new_paths_do_not_warn(seen):
    assert seen["new_paths_warned"] == []


@pytest.mark.parametrize("old", PATHS)
def test_an_old_path_warns_exactly_once_and_names_the_new_one(seen, old):
    first = seen[old]["first"]
    assert len(first) == 1, first
    category, message, filename = first[0]
    assert category == "FutureWarning" and message.startswith(f"{old} moved to {PATHS[old]}")
    assert filename == "<string>"  # the importing line, not the shim or importlib
    assert seen[old]["again"] == 0


@pytest.mark.parametrize("old", PATHS)
def test_an_old_path_gives_the_same_objects(seen, old):
    assert seen[old]["public"] and not seen[old]["missing"] and not seen[old]["different"]
    assert seen[old]["same_module"] == (old in ALIASES)
