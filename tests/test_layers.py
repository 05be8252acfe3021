"""The package's layers, held by a check rather than by memory: each rule names a part of the
package and the parts it must never import (at module level or inside a function), read from the
source with `ast`, so a violation fails here with the file and line."""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "wgangp_fast"

# part -> parts it must not import; a part is a module or package path under wgangp_fast
RULES = {
    "ops": ("steps", "train", "integrations", "penalty", "bench"),
    "backends": ("ops", "steps", "train", "integrations", "penalty", "bench"),
    "penalty": ("steps", "train", "integrations", "bench"),
    "layouts": ("ops", "steps", "train", "integrations", "penalty", "bench"),
    "steps": ("train", "integrations", "bench"),
    "integrations": ("train", "steps", "bench"),
    "train": ("bench",),
    "testing": ("train", "bench", "steps", "integrations"),
}


def _files(part: str):
    path = PACKAGE / part
    if path.is_dir():
        return sorted(path.rglob("*.py"))
    return [path.with_suffix(".py")]


def _imported(file: pathlib.Path):
    """(line, 'wgangp_fast.x.y') for every import of the package in `file`, relative ones
    resolved against the file's own package."""
    tree = ast.parse(file.read_text(), filename=str(file))
    here = file.relative_to(PACKAGE.parent).with_suffix("").parts
    package = here[:-1]  # a module's package; for __init__.py, the package itself
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "wgangp_fast":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ((node.module,) if node.module else ()))
            else:
                module = node.module or ""
            if module.split(".")[0] != "wgangp_fast":
                continue
            # `from .. import steps` imports the submodule named by the alias
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"


def _part_of(name: str):
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


@pytest.mark.parametrize("part", sorted(RULES))
def test_layer_imports(part):
    forbidden = set(RULES[part])
    bad = []
    for file in _files(part):
        for line, name in _imported(file):
            target = _part_of(name)
            if target in forbidden:
                bad.append(f"{file.relative_to(PACKAGE.parent)}:{line} imports {name}")
    assert not bad, f"{part} must not import {', '.join(sorted(forbidden))}:\n" + "\n".join(bad)


def test_the_check_sees_imports(tmp_path):
    """The parser finds relative and absolute imports, in functions too (a check that sees
    nothing would pass every rule)."""
    sample = PACKAGE / "steps" / "base.py"
    names = {name for _, name in _imported(sample)}
    assert any(n.startswith("wgangp_fast.") for n in names), names
    seen = {_part_of(n) for f in _files("train") for _, n in _imported(f)}
    assert {"steps", "penalty"} & seen, seen
