"""Host-side cost per call of the fused ops at a size where the arithmetic is negligible (64 x 8
float32): what the op wrappers, the dispatcher and autograd add, which bounds small-batch speed on
a GPU as much as on a CPU. Compares each backend with the eager seed-000 code (`reference`).

    python benchmarks/host_overhead.py [--device cpu|cuda] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wgangp_fast import available_backends, bench  # noqa: E402

OPS = ("interpolate", "penalty_forward", "penalty_backward", "roundtrip")


def per_call_us(fn, calls: int, repeats: int, device: torch.device) -> list[float]:
    """Microseconds per call, one figure per repeat of `calls` back-to-back calls."""
    for k in range(calls):
        fn(k)
    bench.synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for k in range(calls):
            fn(k)
        bench.synchronize(device)
        times.append((time.perf_counter() - start) / calls * 1e6)
    return times


def summary(times: list[float]) -> str:
    """median [p20-p80]"""
    p20, *_, p80 = statistics.quantiles(times, n=5)
    return f"{statistics.median(times):6.1f} [{p20:.1f}-{p80:.1f}]"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pac", type=int, default=1)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    usable = [b for b in ("cpu", "cuda", "triton") if b in available_backends()
              and (b == "cpu") == (device.type == "cpu")]
    g = torch.Generator().manual_seed(0)
    real, fake, grads = (torch.randn(64, 8, generator=g).to(device) for _ in range(3))
    sets = [bench.OpInputs(real, fake, grads.requires_grad_(), torch.empty_like(real))]
    print(f"{bench.device_label(device)}, torch {torch.__version__}, {args.threads} thread(s), "
          f"64 x 8 float32, pac {args.pac}: microseconds per call, median [p20-p80] of "
          f"{args.repeats} repeats of {args.calls} calls")
    for op in OPS:
        cells = []
        for backend in ["reference"] + usable:
            fn = bench.op_case(op, backend, sets, args.pac)
            cells.append(f"{backend} {summary(per_call_us(fn, args.calls, args.repeats, device))}")
        print(f"  {op:17s}" + "   ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
