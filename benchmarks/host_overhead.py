"""Host-side cost per call of the fused ops at a size where the arithmetic is negligible (64 x 8
float32): what the op wrappers, the dispatcher and autograd add, which bounds small-batch speed on
a GPU as much as on a CPU. Compares each backend with the eager seed-000 code (`reference`), and,
with --against, with the same backend of another build of the package (e.g. the last release, or
main before a change), in one interleaved run.

    python benchmarks/host_overhead.py [--device cpu|cuda] [--threads 1]
                                       [--against NAME=ROOT[,VAR=VALUE...]]

ROOT is a folder that holds a `wgangp_fast` package (a source tree built in place, or a site
folder a wheel was installed into with `pip install --target`); VAR=VALUE sets an environment
variable for that column (e.g. a build's own path switch). Every column runs in its own
process, importing its package from its root, so two builds of the same package (whose kernel ops
share one torch.library namespace) can be timed side by side; the processes take turns, one
repeat of one column at a time, so drifts of a shared machine hit all columns alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
OPS = ("interpolate", "penalty_forward", "penalty_backward", "roundtrip")


def worker(root: str, backend: str, device_name: str, threads: int, pac: int) -> int:
    """Serves one column: reads `OP CALLS` lines, answers each with the microseconds per call of
    CALLS back-to-back calls of OP (after a warm-up), as one JSON line."""
    sys.path.insert(0, root)
    import time

    import torch

    import wgangp_fast
    from wgangp_fast import bench

    torch.set_num_threads(threads)
    device = torch.device(device_name)
    g = torch.Generator().manual_seed(0)
    real, fake, grads = (torch.randn(64, 8, generator=g).to(device) for _ in range(3))
    sets = [bench.OpInputs(real, fake, grads.requires_grad_(), torch.empty_like(real))]
    fns = {op: bench.op_case(op, backend, sets, pac) for op in OPS}
    print(json.dumps({"package": wgangp_fast.__file__, "torch": torch.__version__,
                      "device": bench.device_label(device)}), flush=True)
    for line in sys.stdin:
        op, calls = line.split()
        fn, calls = fns[op], int(calls)
        for k in range(20):
            fn(k)
        bench.synchronize(device)
        start = time.perf_counter()
        for k in range(calls):
            fn(k)
        bench.synchronize(device)
        print(json.dumps((time.perf_counter() - start) / calls * 1e6), flush=True)
    return 0


class Column:
    """One variant, served by a worker process."""

    def __init__(self, label: str, root: str, backend: str, args, extra_env=()):
        self.label = label
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "WGANGP_FAST_BACKEND")}
        env.update(extra_env)
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE), "--worker", root, backend, "--device", args.device,
             "--threads", str(args.threads), "--pac", str(args.pac)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=root)
        self.info = self._answer()

    def _answer(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the worker of column {self.label!r} died (see its stderr above)")
        return json.loads(line)

    def time(self, op: str, calls: int) -> float:
        self.proc.stdin.write(f"{op} {calls}\n")
        self.proc.stdin.flush()
        return self._answer()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def summary(times: list) -> str:
    """median [p20-p80]"""
    p20, *_, p80 = statistics.quantiles(times, n=5)
    return f"{statistics.median(times):.1f} [{p20:.1f}-{p80:.1f}]"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pac", type=int, default=1)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--against", action="append", default=[], metavar="NAME=ROOT[,VAR=VALUE]",
                        help="also time the same backends of the package under ROOT, as NAME")
    parser.add_argument("--worker", nargs=2, metavar=("ROOT", "BACKEND"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker[0], args.worker[1], args.device, args.threads, args.pac)

    sys.path.insert(0, str(ROOT))
    from wgangp_fast import available_backends

    usable = [b for b in ("cpu", "cuda", "triton") if b in available_backends()
              and (b == "cpu") == (args.device.startswith("cpu"))]
    specs = [("reference (eager)", str(ROOT), "reference", ())]
    specs += [(b, str(ROOT), b, ()) for b in usable]
    for item in args.against:
        name, sep, rest = item.partition("=")
        root, *settings = rest.split(",")
        env = [tuple(s.split("=", 1)) for s in settings]
        if not sep or not Path(root, "wgangp_fast").is_dir() or any(len(e) != 2 for e in env):
            parser.error("--against must be NAME=ROOT[,VAR=VALUE...] with ROOT holding "
                         f"wgangp_fast, got {item!r}")
        specs += [(f"{b}, {name}", str(Path(root).resolve()), b, env) for b in usable]
    columns = [Column(label, root, backend, args, env) for label, root, backend, env in specs]
    try:
        info = columns[0].info
        print(f"{info['device']}, torch {info['torch']}, {args.threads} thread(s), 64 x 8 "
              f"float32, pac {args.pac}: microseconds per call, median [p20-p80] of "
              f"{args.repeats} repeats of {args.calls} calls, columns interleaved\n")
        for c in columns:
            print(f"- {c.label}: {c.info['package']}")
        print("\n| op | " + " | ".join(c.label for c in columns) + " |")
        print("| --- |" + " --- |" * len(columns))
        for op in OPS:
            times = {c.label: [] for c in columns}
            for _ in range(args.repeats):
                for c in columns:
                    times[c.label].append(c.time(op, args.calls))
            print(f"| {op} | " + " | ".join(summary(t) for t in times.values()) + " |",
                  flush=True)
    finally:
        for c in columns:
            c.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
