"""What bounds a critic step on the GPU: per call, the kernels it launches, the time the GPU is
busy with them, and the time a call takes when calls are queued back to back; the busy share
(busy / queued) says whether the step is bound by the GPU's work (near 100%) or by the host's
launches and Python (well below). The steps are the step benchmark's (wgangp_fast.bench.steps:
the seed loop for `reference`, CriticStep for the modes), built the same way.

    python scripts/step_profile.py [--device cuda] [--critics mlp28 ctgan conv32 conv64]
        [--modes reference eager graph] [--dtype float32] [--calls 20] [--out FILE.md]

A stage of `make gpu-check`. On the CPU (for a dry run) "kernels" counts the aten ops the
profiler records and "busy" their summed self time.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wgangp_fast.bench import CRITICS, DTYPES, device_label, synchronize  # noqa: E402
from wgangp_fast.bench.steps import critic_specs, mode_case, step_case  # noqa: E402

VARIANTS = ("reference", "wgangp_fast", "eager", "compile", "graph", "compile+graph",
            "no_penalty")


def build(spec, variant, device, autocast):
    torch.manual_seed(0)
    critic = spec.build().to(device)
    real = torch.randn(spec.batch, *spec.in_shape, device=device)
    fake = torch.randn(spec.batch, *spec.in_shape, device=device)
    if variant in ("reference", "wgangp_fast", "no_penalty"):
        fn = step_case(spec, variant, copy.deepcopy(critic), real, fake, autocast)
        for k in range(3):
            fn(k)
        return fn
    fn, _ = mode_case(spec, variant, critic, real, fake, autocast)
    return fn


def queued_ms(fn, calls, device):
    """ms per call with `calls` calls queued back to back (the host runs ahead of the GPU
    wherever it can)."""
    synchronize(device)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for k in range(calls):
            fn(k)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / calls
    import time

    t0 = time.perf_counter()
    for k in range(calls):
        fn(k)
    return (time.perf_counter() - t0) * 1e3 / calls


def profiled(fn, calls, device):
    """(kernels per call, GPU-busy ms per call) from the profiler's device events."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    synchronize(device)
    with profile(activities=activities) as prof:
        for k in range(calls):
            fn(k)
        synchronize(device)
    if device.type == "cuda":
        kind = torch.autograd.DeviceType.CUDA
        events = [e for e in prof.events() if e.device_type == kind]
        busy_us = sum(e.time_range.elapsed_us() for e in events)
    else:
        events = [e for e in prof.events() if e.name.startswith("aten::")]
        busy_us = sum(e.self_cpu_time_total for e in events)
    return len(events) / calls, busy_us / 1e3 / calls


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    p.add_argument("--critics", nargs="+", choices=CRITICS, default=list(CRITICS))
    p.add_argument("--modes", nargs="+", choices=VARIANTS,
                   default=["reference", "eager", "graph"])
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="bfloat16: bfloat16 autocast")
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = p.parse_args(argv)
    if args.calls < 1:
        raise SystemExit(f"--calls must be at least 1, got {args.calls}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    if device.type == "cpu":
        torch.set_num_threads(1)
    modes = [m for m in args.modes if device.type == "cuda" or "graph" not in m]
    autocast = None if args.dtype == "float32" else DTYPES[args.dtype]
    specs = critic_specs()
    lines = [f"{device_label(device)}, torch {torch.__version__}, {args.dtype}"
             f"{' autocast' if autocast else ''}: per critic step, {args.calls} calls profiled "
             f"and {args.calls} queued back to back", "",
             "| critic | variant | kernels | GPU busy ms | queued ms | busy share |",
             "| --- | --- | --- | --- | --- | --- |"]
    print("\n".join(lines), flush=True)
    for name in args.critics:
        for variant in modes:
            fn = build(specs[name], variant, device, autocast)
            kernels, busy = profiled(fn, args.calls, device)
            queued = queued_ms(fn, args.calls, device)
            lines.append(f"| {name} | {variant} | {kernels:.0f} | {busy:.3f} | {queued:.3f} | "
                         f"{busy / queued:.0%} |")
            print(lines[-1], flush=True)
            if args.out is not None:
                args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
