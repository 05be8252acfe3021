"""mkdocs hooks of the docs site (mkdocs.yml names this file; it is not a page).

- The benchmark charts of benchmarks/results are published under charts/, so the pages embed the
  very files the benchmark suite wrote beside its CSV and markdown (no copies in docs/).
- A page the nav and other pages already name but that is still being written (PENDING) is built
  as a one-paragraph placeholder, so that `--strict` checks every other link meanwhile; once the
  page is in docs/, the page is built and its entry here is dead (delete it).
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

DOCS = Path(__file__).resolve().parent
RESULTS = DOCS.parent / "benchmarks" / "results"
PENDING = {"porting.md": "Porting your code"}


def on_files(files, config):
    for png in sorted(RESULTS.rglob("*.png")):
        uri = "charts/" + png.relative_to(RESULTS).as_posix()
        files.append(File.generated(config, uri, abs_src_path=str(png)))
    for uri, title in PENDING.items():
        if (DOCS / uri).exists():
            continue
        files.append(File.generated(config, uri, content=(
            f"# {title}\n\nThis page is being written.\n")))
    return files
