"""docs/porting.md as the porting tests read it: its tables, the code of each recipe (a table
cell's statements, or the python blocks of the section a cell links to), the helpers its runnable
block defines, and stand-ins for the client packages a recipe imports."""

from __future__ import annotations

import contextlib
import re
import sys
import types
from pathlib import Path
from typing import Dict, List

DOC = Path(__file__).resolve().parents[2] / "docs" / "porting.md"
PORTING_HEADER = ["the code does", "before", "after"]
_STATEMENTS = ("gp = ", "patch_method(", "wgf_ctgan.patch(")

# which test runs the porting row whose first cell holds this phrase
PORTING_ROWS = {
    "`LAMBDA = 0.1`": "toy", "`Tensor(np.random.random": "images",
    "conditional critic": "conditional", "language model": "lm",
    "full image shape": "full_shape", "torchgan": "torchgan", "CTGAN-style": "packed",
    "SDV's": "sdv", "trainer method": "trainer", "returning `(gp, norms)`": "method_with_norms",
    "`GAN._loss_gradient_penalty`": "synthcity", "dpgan": "dpgan", "RadialGAN": "radialgan",
    "DGAN": "dgan",
}


def text() -> str:
    return DOC.read_text()


def tables() -> List[List[List[str]]]:
    """Every markdown table, a list of rows of cells: the header row first, the --- row left
    out."""
    found, current = [], []
    for line in text().splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            if not all(set(c) <= {"-", " "} for c in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def table(header: List[str]) -> List[List[str]]:
    """The rows of every table with this header."""
    rows = [r for t in tables() if t[0] == header for r in t[1:]]
    assert rows, f"docs/porting.md has no table {header}"
    return rows


def code(cell: str) -> List[str]:
    return re.findall(r"`([^`]+)`", cell)


def blocks(heading: str) -> List[str]:
    """The python code blocks of the section under `### heading`, up to the next heading."""
    body = text()
    start = body.index(f"\n### {heading}\n")
    end = min([i for i in (body.find("\n## ", start + 1), body.find("\n### ", start + 1))
               if i != -1] or [len(body)])
    found = re.findall(r"```python[^\n]*\n(.*?)```", body[start:end], flags=re.S)
    assert found, f"docs/porting.md section {heading!r} holds no python block"
    return found


def row(key: str) -> List[str]:
    phrases = [p for p, k in PORTING_ROWS.items() if k == key]
    rows = [r for r in table(PORTING_HEADER) for p in phrases if p in r[0]]
    assert len(rows) == 1, f"docs/porting.md should hold one porting row for {key}, not {rows}"
    return rows[0]


def after(key: str) -> List[str]:
    """The code of the row's `after`: its statements, or the blocks of the section it links."""
    cell = row(key)[2]
    link = re.fullmatch(r"\[([^\]]+)\]\(#[^)]+\)", cell)
    if link:
        return blocks(link.group(1))
    statements = [c for c in code(cell) if c.startswith(_STATEMENTS)]
    assert statements, f"porting row {key}: no statement in its after cell {cell!r}"
    return statements


def helpers() -> Dict[str, object]:
    """What the page's runnable helper block (the one defining cpu_alpha) defines."""
    for block in re.findall(r"```python\n(.*?)```", text(), flags=re.S):
        if "def cpu_alpha" in block:
            scope: Dict[str, object] = {}
            exec(compile(block, str(DOC), "exec"), scope)
            return scope
    raise AssertionError("docs/porting.md defines no cpu_alpha")


@contextlib.contextmanager
def client_modules(**modules: Dict[str, object]):
    """sys.modules holds a stand-in module for each dotted name given (keyword `a__b` for
    `a.b`), with the given attributes, and its packages where none is imported; all taken away
    afterwards. The recipes' `from <client> import <class>` then finds the test's transcription."""
    saved = {}

    def put(name, module):
        saved.setdefault(name, sys.modules.get(name))
        sys.modules[name] = module

    try:
        for key, attributes in modules.items():
            name = key.replace("__", ".")
            parts = name.split(".")
            for i in range(1, len(parts)):
                parent = ".".join(parts[:i])
                if parent not in sys.modules:
                    put(parent, types.ModuleType(parent))
            module = types.ModuleType(name)
            module.__dict__.update(attributes)
            put(name, module)
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
