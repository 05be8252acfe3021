"""mkdocs hooks of the docs site (mkdocs.yml names this file; it is not a page).

- The benchmark charts of benchmarks/results are published under charts/, so the pages embed the
  very files the benchmark suite wrote beside its CSV and markdown (no copies in docs/).
- A ```python notest: REASON fence (a block tests/test_docs.py does not run) is rendered as
  ```python: the Markdown extensions take the words after the language for no fence at all.
"""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parent
RESULTS = DOCS.parent / "benchmarks" / "results"
NOTEST_FENCE = re.compile(r"^([ \t]*(?:`{3,}|~{3,})python)[ \t]+notest\b.*$", re.MULTILINE)


def on_files(files, config):
    from mkdocs.structure.files import File  # here: tests/test_docs.py imports this file

    for png in sorted(RESULTS.rglob("*.png")):
        uri = "charts/" + png.relative_to(RESULTS).as_posix()
        files.append(File.generated(config, uri, abs_src_path=str(png)))
    return files


def on_page_markdown(markdown, page, config, files):
    return NOTEST_FENCE.sub(r"\1", markdown)
