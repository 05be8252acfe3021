"""The runnable examples run (briefly) and report what they should."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*args, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("mode", ["auto", "eager"])
def test_whole_step_example_trains_towards_the_ring(mode):
    done = _run("examples/whole_step.py", "--mode", mode, "--iterations", "200")
    assert done.returncode == 0, done.stderr
    assert f"(mode {'eager' if mode == 'auto' else mode})" in done.stdout
    radius = float(re.search(r"radius (\d+\.\d+)", done.stdout).group(1))
    assert 0.5 < radius < 1.5


@pytest.mark.parametrize("script, expect", [
    ("examples/mlp_loop.py", r"iter\s+39\s+W [+-]\d"),
    ("examples/loss_object.py", r"W-dist: [+-]?\d"),
    ("examples/ctgan_patch.py", r"fused penalty in use: True"),
])
def test_drop_in_examples_run_as_written(script, expect):
    done = _run(script)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(expect, done.stdout), done.stdout[-2000:]
    assert "nan" not in done.stdout.lower()
