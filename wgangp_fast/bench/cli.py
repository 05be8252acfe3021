"""The benchmark command line: `wgangp-fast bench` and `python benchmarks/run.py`."""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import torch

from .harness import (
    CRITICS,
    OP_NAMES,
    SHAPES,
    STEP_MODES,
    Budget,
    Meta,
    device_label,
    file_stem,
    merge_rows,
    read_csv,
    triton_version,
    write_csv,
)
from .ops import op_backends, run_ops
from .report import _chart, _preamble, markdown, render
from .steps import PAIRED_TITLE, run_steps


def _budget(device: torch.device, kind: str, quick: bool, repeats: int | None,
            clock: str = "wall") -> Budget:
    if kind == "ops":
        b = Budget(3, 10, 200, 0.5) if device.type == "cuda" else Budget(2, 5, 40, 1.0)
    else:
        b = Budget(3, 10, 100, 2.0) if device.type == "cuda" else Budget(2, 10, 200, 15.0)
    if quick:
        b = Budget(max(1, b.warmup - 1), max(3, b.min_rounds // 2), b.max_rounds // 2,
                   b.seconds / 2)
    if repeats is not None:
        b = Budget(min(b.warmup, 1), repeats, repeats, 0.0)
    b.clock = clock
    return b


# Where `wgangp-fast bench` writes unless --out says: a folder of the current directory, named
# in its output (the repository's benchmarks/run.py passes its own benchmarks/results).
DEFAULT_OUT = "wgangp_fast_bench"


def build_parser(prog: str | None = None,
                 default_out: str | os.PathLike = DEFAULT_OUT) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog or "wgangp-fast bench", description="Benchmark the fused gradient-penalty ops and critic steps "
                               "against the eager code they replace; writes "
                               "OUT/<device>-<yyyymmdd>.csv/.md/.png (a later run of the same "
                               "day merges its rows into them).")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: cuda when a GPU is visible (default: %(default)s)")
    p.add_argument("--suite", choices=("ops", "steps", "all"), default="all")
    p.add_argument("--quick", action="store_true",
                   help="fewer sizes and rounds (CPU ops: 1 and 16 MiB)")
    p.add_argument("--out", metavar="DIR", type=Path, default=Path(default_out),
                   help="results folder, made if missing (default: %(default)s)")
    p.add_argument("--sizes", type=float, nargs="+", metavar="MIB",
                   help="op sizes in MiB per tensor (default CPU: 1 16 64; GPU: 1 4 16 64 256 "
                        "1024)")
    p.add_argument("--dtypes", nargs="+", choices=("float32", "bfloat16", "float16"),
                   help="default CPU: float32; GPU: float32 bfloat16 (steps: bfloat16 means "
                        "bfloat16 autocast)")
    p.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES),
                   help="op shapes (default: both)")
    p.add_argument("--ops", nargs="+", choices=OP_NAMES, default=list(OP_NAMES))
    p.add_argument("--critics", nargs="+", choices=CRITICS, default=list(CRITICS))
    p.add_argument("--modes", nargs="*", choices=STEP_MODES, default=list(STEP_MODES),
                   help="CriticStep / TrainStep modes of the step suite (default: all that run "
                        "on the device; the graph modes need CUDA; none: only the reference loop)")
    p.add_argument("--iterations", action=argparse.BooleanOptionalAction, default=None,
                   help="also time whole training iterations (5 critic steps + a generator "
                        "step); default on for CUDA, off for the CPU")
    p.add_argument("--repeats", type=int, help="exact number of timed rounds (overrides the "
                                               "time budget)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads for CPU runs")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall: elapsed time (default); cpu: CPU time of the one compute thread "
                        "(CPU device, implies --threads 1), for a machine shared with other "
                        "work, where elapsed times measure the other work too")
    p.add_argument("--compile-backend", default="inductor", metavar="NAME",
                   help="torch.compile backend of the compiled step modes (default inductor; "
                        "aot_eager traces without code generation, to test the plumbing)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG chart")
    p.add_argument("--render", metavar="CSV", type=Path,
                   help="measure nothing: rewrite the markdown and chart of an existing results "
                        "CSV (e.g. one from another machine), keeping the markdown's notes")
    return p

def main(argv: Sequence[str] | None = None, prog: str | None = None,
         default_out: str | os.PathLike = DEFAULT_OUT) -> int:
    args = build_parser(prog, default_out).parse_args(argv)
    if args.render is not None:
        if not args.render.is_file():
            raise SystemExit(f"--render: no such results CSV: {args.render}")
        print(render(args.render, not args.no_plot))
        return 0
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    if args.repeats is not None and args.repeats < 1:
        raise SystemExit(f"--repeats must be at least 1, got {args.repeats}")
    if args.sizes is not None and any(not s > 0 for s in args.sizes):
        raise SystemExit(f"--sizes must be positive MiB values, got {args.sizes}")
    if args.clock == "cpu":
        if device.type != "cpu" or args.threads not in (None, 1):
            raise SystemExit("--clock cpu needs --device cpu and one thread (--threads 1)")
        args.threads = 1
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    gpu = device.type == "cuda"
    if args.sizes is not None:
        sizes = args.sizes
    elif gpu:
        sizes = [4.0 ** i for i in range(6)]
    else:
        sizes = [1.0, 16.0] if args.quick else [1.0, 16.0, 64.0]
    dtypes = args.dtypes or (["float32", "bfloat16"] if gpu else ["float32"])

    day = _dt.date.today()
    meta = Meta(device_label(device), day.isoformat(), torch.__version__, triton_version())
    out = args.out.resolve()
    if out.exists() and not out.is_dir():
        raise SystemExit(f"--out {args.out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    stem = file_stem(meta.device, day)
    failures: List[str] = []
    backends = op_backends(device, failures)
    notes = [f"Threads: torch.get_num_threads() = {torch.get_num_threads()}. "
             f"Op backends on this device: {', '.join(backends)} "
             f"(`reference`: CTGAN's penalty formulas, eager). Clock: "
             + ("CUDA events around each call, which starts on an idle GPU (host overhead "
                "included)." if device.type == "cuda" else
                "cpu (CPU time of the one compute thread)." if args.clock == "cpu" else
                "wall (elapsed time).")] + failures
    for line in failures:
        print("WARNING:", line, file=sys.stderr, flush=True)
    print(f"{meta.device}: torch {meta.torch}, triton {meta.triton or '-'}, "
          f"{torch.get_num_threads()} threads; writing {out / stem}.csv", flush=True)

    def log(msg):
        print(msg, flush=True)

    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    rows: List[Dict[str, str]] = []
    if args.suite in ("ops", "all"):
        rows += run_ops(device, sizes, dtypes, args.shapes, args.ops,
                        _budget(device, "ops", args.quick, args.repeats, args.clock), meta, log,
                        backends)
    if args.suite in ("steps", "all"):
        paired: List[str] = []
        iterations = gpu if args.iterations is None else args.iterations
        rows += run_steps(device, args.critics, dtypes,
                          _budget(device, "steps", args.quick, args.repeats, args.clock), meta,
                          log, paired, modes=args.modes, iterations=iterations,
                          compile_options={"backend": args.compile_backend})
        if paired:
            notes += ["", PAIRED_TITLE + ": the speed-up over `reference` from the per-round "
                      "ratios (both timed in the same round), median and a distribution-free "
                      "95% confidence interval:"] + paired
    else:
        # An ops-only run keeps the step notes of the rows it leaves in place.
        old_md = out / f"{stem}.md"
        kept = [line for line in _preamble(old_md)
                if line.startswith(PAIRED_TITLE) or "paired" in line]
        notes += ([""] + kept) if kept else []

    if hasattr(os, "getloadavg"):
        # Other processes on the machine slow every variant, and the interleaved rounds keep the
        # ratios fair, but the absolute times are only as good as the machine was quiet.
        notes.append(f"1-minute load average at start / end of the latest run: {load_start:.2f} / "
                     f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} logical CPUs.")
    csv_path = out / f"{stem}.csv"
    merged = merge_rows(read_csv(csv_path) if csv_path.exists() else [], rows)
    write_csv(csv_path, merged)
    cmd = " ".join([prog or "wgangp-fast bench"]
                   + list(argv if argv is not None else sys.argv[1:]))
    notes.append(f"Latest command: `{cmd}`.")
    text = markdown(merged, notes)
    (out / f"{stem}.md").write_text(text + "\n")
    written = [csv_path, out / f"{stem}.md"]
    if not args.no_plot and _chart(merged, out / f"{stem}.png"):
        written.append(out / f"{stem}.png")
    print()
    print(text)
    print("results: " + ", ".join(str(p) for p in written))
    return 0
