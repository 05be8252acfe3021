"""docs/training.md runs as written: every ```python block in a fresh process (in a temporary
folder, in order, each on its own), and every `wgangp-fast` command of its shell blocks parses."""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

from wgangp_fast import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "training.md"
BLOCKS = re.findall(r"^( *)```(\w+)\n(.*?)^\1```", PAGE.read_text(), re.M | re.S)


def _code(indent, body):
    return "\n".join(line[len(indent):] for line in body.splitlines()) + "\n"


PYTHON = [_code(i, b) for i, lang, b in BLOCKS if lang == "python"]
COMMANDS = [line for i, lang, b in BLOCKS if lang == "bash"
            for line in _code(i, b).splitlines() if line.startswith("wgangp-fast ")]


def test_the_page_has_what_it_documents():
    assert len(PYTHON) >= 2 and len(COMMANDS) >= 8
    assert any(c.startswith("wgangp-fast sample") for c in COMMANDS)


@pytest.mark.parametrize("code", PYTHON, ids=[f"block{i}" for i in range(len(PYTHON))])
def test_python_blocks_run(code, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", "import torch; torch.set_num_threads(1)\n" + code],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("command", COMMANDS)
def test_shell_commands_are_valid(command):
    args = cli.build_parser().parse_args(shlex.split(command)[1:])
    assert args.command in ("train", "sample")
