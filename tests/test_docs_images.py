"""docs/images.md: every python block runs as written (in its own process), and every
`wgangp-fast` command of its shell blocks is one the command line accepts."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from wgangp_fast import cli

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "images.md"


def _blocks(kind):
    text = PAGE.read_text()
    return [m.group(1) for m in re.finditer(r"```" + kind + r"\n(.*?)```", text, re.S)]


def test_the_page_has_python_and_shell_blocks():
    assert len(_blocks("python")) >= 2 and len(_blocks("bash")) >= 3
    assert "MEASURED_PLACEHOLDER" not in PAGE.read_text()


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_python_blocks_run_as_written(index, tmp_path):
    code = _blocks("python")[index]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WGANGP_FAST_CACHE": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_shell_commands_are_valid_wgangp_fast_commands():
    commands = [line.strip() for block in _blocks("bash") for line in block.splitlines()
                if line.strip().startswith("wgangp-fast ")]
    assert len(commands) >= 5
    parser = cli.build_parser()
    for command in commands:
        argv = shlex.split(command.split("#")[0])[1:]
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:
            raise AssertionError(f"not a valid command: {command}") from exc
        cli._overrides(args)  # the data flags combine as the run would take them
