"""Benchmarks of the fused ops, of whole critic steps and of training iterations:
`wgangp-fast bench` and `python benchmarks/run.py` (a thin wrapper over `main`).

    harness.py  the machine, timers, peak memory, the CSV schema (one header for every row)
    ops.py      the op suite: each op of every backend against the eager reference code
    steps.py    the step suite: the plain loop, the drop-in, CriticStep / TrainStep per mode
    report.py   markdown tables and the chart, from the CSV rows
    cli.py      the command line
"""

from __future__ import annotations

import os  # noqa: F401  (tests patch os.getloadavg through this module)

from .cli import build_parser, main
from .harness import (
    AUTOCAST_SUFFIX,
    CRITICS,
    DTYPES,
    HEADER,
    ITERATION_SUFFIX,
    LAMBDA_GP,
    MIB,
    OP_NAMES,
    OP_TRAFFIC,
    ROW_KEY,
    SHAPES,
    STEP_BACKENDS,
    STEP_MODES,
    STEP_VARIANTS,
    Budget,
    Meta,
    device_label,
    file_stem,
    measure,
    merge_rows,
    paired_ratio,
    peak_memory_mb,
    percentile,
    read_csv,
    summary_ms,
    synchronize,
    write_csv,
)
from .ops import (
    OpInputs,
    make_op_inputs,
    op_backends,
    op_case,
    op_geometry,
    rotation_sets,
    run_ops,
    seed_interpolate,
    seed_penalty,
)
from .report import markdown, mode_speedups, op_speedups, plot, render, step_ratios
from .steps import critic_specs, iteration_case, mode_case, run_steps, step_case

__all__ = [
    "AUTOCAST_SUFFIX", "CRITICS", "DTYPES", "HEADER", "ITERATION_SUFFIX", "LAMBDA_GP", "MIB",
    "OP_NAMES", "OP_TRAFFIC", "ROW_KEY", "SHAPES", "STEP_BACKENDS", "STEP_MODES",
    "STEP_VARIANTS", "Budget", "Meta", "OpInputs", "build_parser", "critic_specs",
    "device_label", "file_stem", "iteration_case", "main", "make_op_inputs", "markdown",
    "measure", "merge_rows", "mode_case", "mode_speedups", "op_backends", "op_case",
    "op_geometry", "op_speedups", "paired_ratio", "peak_memory_mb", "percentile", "plot",
    "read_csv", "render", "rotation_sets", "run_ops", "run_steps", "seed_interpolate",
    "seed_penalty", "step_case", "step_ratios", "summary_ms", "synchronize", "write_csv",
]
