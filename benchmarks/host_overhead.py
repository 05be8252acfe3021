"""Host-side cost per call of the fused ops at a size where the arithmetic is negligible (64 x 8
float32): what the op wrappers, the dispatcher and autograd add, which bounds small-batch speed on
a GPU as much as on a CPU. Compares each backend with the eager seed-000 code (`reference`), and
the compiled backends' C++ autograd with their Python autograd.Function path.

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

from wgangp_fast import available_backends, backends, bench, ops  # noqa: E402

OPS = ("interpolate", "penalty_forward", "penalty_backward", "roundtrip")


def per_call_us(fns: dict, calls: int, repeats: int, device: torch.device) -> dict:
    """Microseconds per call of each fn(k) (keyed by name): one figure per repeat of `calls`
    back-to-back calls, the functions interleaved repeat by repeat so drifts hit all alike. A key
    is (label, C++ autograd flag): the flag is set while that function runs."""
    times = {key: [] for key in fns}
    for repeat in range(repeats + 1):  # the first round warms up
        for key, fn in fns.items():
            ops.CPP_AUTOGRAD = key[1]
            for k in range(calls if repeat else 20):
                fn(k)
            bench.synchronize(device)
            if not repeat:
                continue
            start = time.perf_counter()
            for k in range(calls):
                fn(k)
            bench.synchronize(device)
            times[key].append((time.perf_counter() - start) / calls * 1e6)
    ops.CPP_AUTOGRAD = True
    return times


def summary(times: list[float]) -> str:
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
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    usable = [b for b in ("cpu", "cuda", "triton") if b in available_backends()
              and (b == "cpu") == (device.type == "cpu")]
    # (column, backend, C++ autograd): the compiled backends twice, with their autograd in C++
    # and through the Python autograd.Function twins (WGANGP_FAST_CPP_AUTOGRAD=0).
    variants = [("reference (eager)", "reference", True)]
    for b in usable:
        if b in backends.COMPILED:
            variants += [(f"{b}, C++ autograd", b, True), (f"{b}, Python autograd", b, False)]
        else:
            variants.append((b, b, True))
    g = torch.Generator().manual_seed(0)
    real, fake, grads = (torch.randn(64, 8, generator=g).to(device) for _ in range(3))
    sets = [bench.OpInputs(real, fake, grads.requires_grad_(), torch.empty_like(real))]
    print(f"{bench.device_label(device)}, torch {torch.__version__}, {args.threads} thread(s), "
          f"64 x 8 float32, pac {args.pac}: microseconds per call, median [p20-p80] of "
          f"{args.repeats} repeats of {args.calls} calls, variants interleaved\n")
    print("| op | " + " | ".join(label for label, _, _ in variants) + " |")
    print("| --- |" + " --- |" * len(variants))
    for op in OPS:
        fns = {}
        for label, backend, cpp in variants:
            ops.CPP_AUTOGRAD = cpp  # penalty_backward builds its graphs here
            fns[(label, cpp)] = bench.op_case(op, backend, sets, args.pac)
        times = per_call_us(fns, args.calls, args.repeats, device)
        print(f"| {op} | " + " | ".join(summary(t) for t in times.values()) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
