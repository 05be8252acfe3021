"""Benchmark the fused gradient-penalty ops and critic steps (same as `wgangp-fast bench`).

    python benchmarks/run.py --device cpu --suite all
    python benchmarks/run.py --device cuda --suite ops --quick

Results go to benchmarks/results/<device>-<yyyymmdd>.csv/.md/.png; the logic lives in
wgangp_fast/bench/ so the installed package's CLI runs the same code.
"""

from __future__ import annotations

import sys

from wgangp_fast.bench import main

if __name__ == "__main__":
    sys.exit(main(prog="benchmarks/run.py"))
