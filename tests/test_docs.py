"""Every code block of README.md and docs/**/*.md runs, or is checked, as written.

- ```python: run as written in a fresh interpreter, in an empty temporary folder, with the package
  importable (the checkout first on PYTHONPATH), one thread (OMP_NUM_THREADS=1), matplotlib's
  Agg backend and a time limit (PYTHON_TIMEOUT_S). A failure names FILE:LINE of the fence and
  the tail of the block's stderr. A block must therefore be self-contained, imports included.
- ```python notest: REASON: not run, reported as skipped with its reason; a `notest` fence
  without a reason fails. Use it sparingly (a GPU-only block, a block that needs a download).
  The docs site renders such a fence as plain python (docs/hooks.py), GitHub does by itself.
- Shell blocks (```bash, sh, shell, console, and fences without a language, which may hold
  diagrams: there only lines that start with a command below count; console blocks: the lines
  after a `$ ` prompt). Each `wgangp-fast ...` / `python -m wgangp_fast ...` command (also
  `python3 -m`, and `torchrun ... -m wgangp_fast ...`), with `\\` continuations joined and `#`
  comments dropped:
    1. its arguments must parse with the real parser (`wgangp_fast.cli.build_parser()` for
       train, `wgangp_fast.bench.cli.build_parser()` for bench); `--help` must exit 0; an
       argument `...` stands for arguments not shown and is dropped;
    2. the cheap ones then run for real, the commands of one block in order in one temporary
       folder (so a `--resume` line continues the run of a line above it), each shortened:
       `train` on a dataset the package makes (ring8, grid25, swissroll, digits) for 2 more
       steps than its checkpoint holds, 500 evaluation samples, one thread, no progress bar;
       `bench` on the CPU, with one 64 KiB size, one timed round, the mlp28 critic, no chart.
       `sample` of a run a command above it in the block trained, at most 500 samples.
       The run must exit 0. Not run, only parsed: data files the block does not make (--csv,
       --images, --mnist, --data), `--resume` or `sample` with no checkpoint from the block,
       torchrun (several processes), `--device cuda` (no GPU here), `--help`, a command with
       `...`.
  `make`, `pip`, `git`, `cd`, `export` and every other command are not run: they set up a
  machine, which the tests cannot redo per block.

"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

from wgangp_fast.train.data import DATASETS, FILE_DATASETS

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))
PYTHON_TIMEOUT_S = 300
SHELL_TIMEOUT_S = 300
SHELL_LANGUAGES = ("bash", "sh", "shell", "console", "")
# the datasets a command can train on with no file (made or shipped by the package)
BUILTIN_DATASETS = tuple(name for name in DATASETS if name not in FILE_DATASETS)
# an argument that stands for more arguments (`wgangp-fast train ...`): dropped before parsing
PLACEHOLDER = "..."


@dataclass
class Block:
    page: Path
    line: int        # of the opening fence, 1-based
    info: str        # the fence's info string
    code: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def language(self) -> str:
        return self.info.split()[0].lower() if self.info.split() else ""


def read_blocks(page: Path) -> List[Block]:
    """The fenced code blocks of a Markdown page (``` or ~~~, indented too, as in lists)."""
    blocks, lines, i = [], page.read_text().splitlines(), 0
    while i < len(lines):
        m = re.match(r"^(\s*)(`{3,}|~{3,})(.*)$", lines[i])
        if not m or (m.group(2)[0] == "`" and "`" in m.group(3)):
            i += 1
            continue
        indent, fence, info = m.group(1), m.group(2), m.group(3).strip()
        close = re.compile(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        body, j = [], i + 1
        while j < len(lines) and not close.match(lines[j]):
            line = lines[j]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            j += 1
        blocks.append(Block(page, i + 1, info, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def notest_reason(info: str) -> Optional[str]:
    """None for a block to run; the reason ('' if none was given) for a `notest` block."""
    words = info.split(None, 2)
    if len(words) < 2 or not words[1].lower().startswith("notest"):
        return None
    rest = info.split(None, 1)[1][len("notest"):]
    return rest.strip().lstrip(":#-").strip()


def _all_blocks() -> List[Block]:
    return [b for page in PAGES for b in read_blocks(page)]


BLOCKS = _all_blocks()
PYTHON_BLOCKS = [b for b in BLOCKS if b.language in ("python", "py")]
SHELL_BLOCKS = [b for b in BLOCKS if b.language in SHELL_LANGUAGES]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("WGANGP_FAST_BACKEND", "PYTHONSTARTUP", "TRITON_INTERPRET")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in
                                          env.get("PYTHONPATH", "").split(os.pathsep) if p]))
    env.update(extra)
    return env


@pytest.mark.parametrize("block", [pytest.param(b, id=b.where) for b in PYTHON_BLOCKS])
def test_python_block_runs(block: Block, tmp_path):
    reason = notest_reason(block.info)
    if reason is not None:
        assert reason, (f"{block.where}: a `python notest` block needs its reason on the fence "
                        f"line, e.g. ```python notest: needs a CUDA device")
        pytest.skip(f"{block.where}: notest: {reason}")
    script = tmp_path / "block.py"
    script.write_text(block.code)
    try:
        done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_env(),
                              capture_output=True, text=True, timeout=PYTHON_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.where}: the python block ran past {PYTHON_TIMEOUT_S} s")
    assert done.returncode == 0, (
        f"{block.where}: the python block failed (exit {done.returncode}); line k of block.py "
        f"is line {block.line} + k of the page\n{done.stderr[-3000:]}")


# ---------------------------------------------------------------------------------------------
# shell blocks


@dataclass
class Command:
    block: Block
    line: int                # of the command's first line on the page
    text: str
    argv: List[str]          # the arguments after `wgangp-fast`
    launcher: str            # "wgangp-fast", "python -m", "torchrun"

    @property
    def where(self) -> str:
        return f"{self.block.page.relative_to(ROOT)}:{self.line}"


def _logical_lines(block: Block) -> List[Tuple[int, str]]:
    """(page line, command text) of a shell block: continuations joined; in a console block only
    the lines after a `$ ` prompt."""
    out, pending, start = [], "", None
    for k, raw in enumerate(block.code.splitlines(), start=block.line + 1):
        line = raw.rstrip()
        if block.language == "console" and not pending:
            if not line.lstrip().startswith("$ "):
                continue
            line = line.lstrip()[2:]
        if start is None:
            start = k
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append((start, (pending + line).strip()))
        pending, start = "", None
    if pending:
        out.append((start, pending.strip()))
    return out


def _command(block: Block, line: int, text: str) -> Optional[Command]:
    """The wgangp_fast command on a line, or None for any other command (or no command)."""
    try:
        words = shlex.split(text, comments=True)
    except ValueError:
        return None  # not shell syntax: a diagram line, say
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words = words[1:]  # VAR=value before the command
    if not words:
        return None
    if words[0] == "wgangp-fast":
        return Command(block, line, text, words[1:], "wgangp-fast")
    if re.match(r"^python(3(\.\d+)?)?$", Path(words[0]).name) and words[1:3] == ["-m",
                                                                                 "wgangp_fast"]:
        return Command(block, line, text, words[3:], "python -m")
    if words[0] == "torchrun" and "wgangp_fast" in words:
        at = words.index("wgangp_fast")
        if words[at - 1] == "-m":
            return Command(block, line, text, words[at + 1:], "torchrun")
    return None


def _commands() -> List[Command]:
    found = []
    for block in SHELL_BLOCKS:
        for line, text in _logical_lines(block):
            cmd = _command(block, line, text)
            if cmd is not None:
                found.append(cmd)
    return found


COMMANDS = _commands()


def _parse(cmd: Command):
    """(namespace or None for --help, the subcommand) of the command's arguments, parsed by the
    real parsers; a parse error fails the test with the page's line."""
    from wgangp_fast.bench.cli import build_parser as bench_parser
    from wgangp_fast.cli import build_parser

    argv = [a for a in cmd.argv if a != PLACEHOLDER]
    assert argv, f"{cmd.where}: `{cmd.text}` names no subcommand (train or bench)"
    parser, args = (bench_parser(), argv[1:]) if argv[0] == "bench" else (build_parser(), argv)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            namespace = parser.parse_args(args)
    except SystemExit as exc:
        said = err.getvalue().strip().splitlines() or [f"exit {exc.code}"]
        assert exc.code == 0, f"{cmd.where}: `{cmd.text}` does not parse: {said[-1]}"
        return None, argv[0]
    return namespace, argv[0]


def _why_not_run(cmd: Command, ns, sub: str, cwd: Path) -> str:
    """'' when the command is cheap to run here, else why it is only parsed."""
    if ns is None:
        return "--help"
    if PLACEHOLDER in cmd.argv:
        return f"`{PLACEHOLDER}` stands for arguments not shown"
    if cmd.launcher == "torchrun":
        return "several processes (torchrun)"
    if getattr(ns, "device", None) == "cuda":
        return "--device cuda (no GPU here)"
    if sub == "bench":
        return "" if ns.render is None else "--render reads a results file the block does not make"
    if sub == "sample":
        source = cwd / ns.source
        found = source.is_file() or (source / "checkpoint.pt").is_file()
        return "" if found else "sample of a run no command above it in the block trained"
    flags = [name.replace("-", "_") for name in FILE_DATASETS] + ["data_path"]
    data = [flag for flag in flags if getattr(ns, flag, None)]
    if data:
        flag = data[0].replace("_path", "").replace("_", "-")
        return f"--{flag} names a data file the block does not make"
    if ns.dataset not in (None, *BUILTIN_DATASETS):
        return f"--dataset {ns.dataset} needs a data file"
    if ns.resume and not (cwd / (ns.out or f"runs/{ns.dataset or 'ring8'}") /
                          "checkpoint.pt").is_file():
        return "--resume with no checkpoint from a command above it in the block"
    return ""


def _shortened(cmd: Command, ns, sub: str, cwd: Path) -> List[str]:
    """The command's arguments with the overrides that make it cheap (argparse keeps the last
    value of a repeated option)."""
    argv = list(cmd.argv)
    if sub == "bench":
        return argv + ["--device", "cpu", "--sizes", "0.0625", "--repeats", "1", "--threads",
                       "1", "--critics", "mlp28", "--no-plot"]
    if sub == "sample":
        return argv + ["-n", str(min(ns.n, 500)), "--threads", "1"]
    cheap = ["--eval-samples", "500", "--threads", "1", "--no-progress"]
    if not ns.resume:
        return argv + ["--steps", "2"] + cheap
    if ns.steps is None:
        # resumed to the run's own total: the shortened run's, which it already reached
        return argv + cheap
    # a larger total: 2 steps more than the checkpoint's, and so the decay's horizon if given
    import torch

    ckpt = cwd / (ns.out or f"runs/{ns.dataset or 'ring8'}") / "checkpoint.pt"
    steps = 2 + torch.load(ckpt, map_location="cpu", weights_only=True)["step"]
    more = ["--lr-decay-steps", str(steps)] if ns.lr_decay_steps is not None else []
    return argv + ["--steps", str(steps)] + more + cheap


def _block_params():
    by_block = {}
    for cmd in COMMANDS:
        by_block.setdefault(cmd.block.where, []).append(cmd)
    return [pytest.param(cmds, id=where) for where, cmds in by_block.items()]


@pytest.mark.parametrize("commands", _block_params())
def test_shell_commands_parse_and_cheap_ones_run(commands: List[Command], tmp_path):
    ran, parsed_only = [], []
    for cmd in commands:
        ns, sub = _parse(cmd)
        why = _why_not_run(cmd, ns, sub, tmp_path)
        if why:
            parsed_only.append(f"{cmd.where} ({why})")
            continue
        argv = [sys.executable, "-m", "wgangp_fast", *_shortened(cmd, ns, sub, tmp_path)]
        try:
            done = subprocess.run(argv, cwd=tmp_path, env=_env(), capture_output=True,
                                  text=True, timeout=SHELL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{cmd.where}: `{cmd.text}` (shortened) ran past {SHELL_TIMEOUT_S} s")
        assert done.returncode == 0, (
            f"{cmd.where}: `{cmd.text}` failed (exit {done.returncode}), run shortened as "
            f"`{' '.join(argv[1:])}` in an empty folder:\n{done.stdout[-1500:]}\n"
            f"{done.stderr[-3000:]}")
        ran.append(cmd.where)
    print(f"\nran {ran}; parsed only {parsed_only}")


# ---------------------------------------------------------------------------------------------
# the checker itself


def test_every_page_is_read_and_blocks_are_found():
    assert (ROOT / "README.md") in PAGES and len(PAGES) > 5
    assert len(PYTHON_BLOCKS) > 10 and COMMANDS
    assert all(b.code.strip() for b in PYTHON_BLOCKS), [b.where for b in PYTHON_BLOCKS
                                                         if not b.code.strip()]


def test_blocks_are_read_with_their_lines(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n\n- item\n\n  ```python\n  x = 1\n\n  y = 2\n  ```\n\n"
                    "````md\n```python\nnot a block\n```\n````\n"
                    "```python notest: needs a GPU\nz = 3\n```\n"
                    "```console\n$ wgangp-fast train \\\n    --steps 3  # short\nstep 3\n```\n")
    blocks = read_blocks(page)
    assert [(b.line, b.language) for b in blocks] == [(5, "python"), (11, "md"), (16, "python"),
                                                      (19, "console")]
    assert blocks[0].code == "x = 1\n\ny = 2\n"
    assert notest_reason(blocks[0].info) is None
    assert notest_reason(blocks[2].info) == "needs a GPU"
    assert notest_reason("python notest") == ""
    assert _logical_lines(blocks[3]) == [(20, "wgangp-fast train      --steps 3  # short")]
    cmd = _command(blocks[3], 20, _logical_lines(blocks[3])[0][1])
    assert cmd is not None and cmd.argv == ["train", "--steps", "3"]
    for text, argv in [("python -m wgangp_fast bench --quick", ["bench", "--quick"]),
                       ("OMP_NUM_THREADS=1 python3 -m wgangp_fast train", ["train"]),
                       ("torchrun --nproc_per_node 2 -m wgangp_fast train --out x",
                        ["train", "--out", "x"])]:
        assert _command(blocks[3], 1, text).argv == argv
    for text in ("make demo", "pip install -e .", "python benchmarks/run.py", " kernels  csrc/"):
        assert _command(blocks[3], 1, text) is None


def test_a_bad_flag_fails_with_the_page_line():
    block = Block(ROOT / "docs" / "x.md", 1, "bash", "wgangp-fast train --no-such-flag 3\n")
    cmd = _command(block, 2, "wgangp-fast train --no-such-flag 3")
    with pytest.raises(AssertionError, match=r"docs/x.md:2: .*unrecognized arguments"):
        _parse(cmd)


def test_a_failing_python_block_fails_with_the_page_line(tmp_path):
    block = Block(ROOT / "docs" / "x.md", 7, "python", "import wgangp_fast\nraise SystemExit(3)\n")
    with pytest.raises(AssertionError, match=r"docs/x.md:7: the python block failed \(exit 3\)"):
        test_python_block_runs(block, tmp_path)


def test_notest_fences_render_as_python():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import hooks
    finally:
        sys.path.remove(str(ROOT / "docs"))
    text = "a\n\n  ```python notest: needs a GPU\n  x = 1\n  ```\n~~~python notest\n~~~\n"
    assert hooks.on_page_markdown(text, page=None, config=None, files=None) == (
        "a\n\n  ```python\n  x = 1\n  ```\n~~~python\n~~~\n")


# internal labels a user cannot place: the seed documents' numbers ("seed 002") and issue numbers
INTERNAL_LABEL = re.compile(r"\bseed[ _-]?0\d\d\b|\bissue #?\d+\b", re.IGNORECASE)


def _help_texts() -> List[str]:
    import argparse

    from wgangp_fast import cli

    parser = cli.build_parser()
    texts = [parser.format_help()]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            texts += [sub.format_help() for sub in action.choices.values()]
    return texts


def test_no_internal_labels_in_the_readme_the_docs_the_help_or_the_docstrings():
    found = []
    sources = PAGES + sorted((ROOT / "wgangp_fast").rglob("*.py")) + sorted(
        (ROOT / "examples").rglob("*.py"))
    for path in sources:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if INTERNAL_LABEL.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    for text in _help_texts():
        found += [f"--help: {line.strip()}" for line in text.splitlines()
                  if INTERNAL_LABEL.search(line)]
    assert not found, "\n".join(found)
    assert INTERNAL_LABEL.search("as in Seed 002") and INTERNAL_LABEL.search("see issue 31")
