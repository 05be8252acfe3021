"""Benchmark the fused gradient-penalty ops and critic steps (same as `wgangp-fast bench`).

    python benchmarks/run.py --device cpu --suite all
    python benchmarks/run.py --device cuda --suite ops --quick

Results go to benchmarks/results/<device>-<yyyymmdd>.csv/.md/.png beside this file (`--out`
names another folder; `wgangp-fast bench` writes to ./wgangp_fast_bench unless told); the logic
lives in wgangp_fast/bench/ so the installed package's CLI runs the same code.
"""

from __future__ import annotations

import sys
from pathlib import Path

from wgangp_fast.bench import main

if __name__ == "__main__":
    sys.exit(main(prog="python benchmarks/run.py",
                  default_out=Path(__file__).resolve().parent / "results"))
