"""Prints the requirements of optional extras of pyproject.toml, one a line: what `make docs`
installs, read from the one place that lists them.

    python scripts/extra_deps.py docs [train ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11: the TOML parser pip carries
    from pip._vendor import tomli as tomllib


def main(names) -> int:
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    unknown = [n for n in names if n not in extras]
    if not names or unknown:
        print(f"usage: extra_deps.py EXTRA...; extras: {', '.join(sorted(extras))}"
              + (f" (not one: {', '.join(unknown)})" if unknown else ""), file=sys.stderr)
        return 2
    for name in names:
        print("\n".join(extras[name]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
