"""The GPU kernels alone, without the op wrappers: each kernel op of the cuda and triton backends,
its largest error against the reference formulas, and its device time per call with calls queued
back to back, as GB/s by the necessary byte count (3b per element for interpolate, b for the
penalty forward, 2b for its backward) and as a share of a device copy of the same tensor
timed the same way. Queued calls hide the host's cost only where it is below the GPU's, so each op
also gets the summed duration of its kernels from the profiler ("kernels"): where the two differ,
the call is bound by host work. A stage of `make gpu-check`:

    python scripts/cuda_diag.py
"""
import torch

from wgangp_fast import backends
from wgangp_fast.testing import autograd_interpolate

ops = torch.ops.wgangp_fast
dev = "cuda"
SHAPES = [((64, 3, 512, 512), 1), ((64, 3, 128, 128), 1), ((1342180, 50), 10),
          ((335540, 50), 10), ((8, 3, 1024, 1024), 1)]


def ms(f, n=20):
    for _ in range(3):
        f()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(n):
        f()
    e.record()
    torch.cuda.synchronize()
    return s.elapsed_time(e) / n


def kernel_us(f, n=10):
    """Microseconds of GPU kernels per call of f, from the profiler's device events (nan where
    the profiler gives none)."""
    try:
        from torch.profiler import ProfilerActivity, profile

        f()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(n):
                f()
            torch.cuda.synchronize()
        cuda = torch.autograd.DeviceType.CUDA
        total = sum(e.time_range.elapsed_us() for e in prof.events() if e.device_type == cuda)
        return total / n if total > 0 else float("nan")
    except Exception as err:  # a diagnosis: report and go on
        print(f"    (no kernel times: {type(err).__name__}: {err})", flush=True)
        return float("nan")


def diagnose(shape, pac):
    """One line for the copy, one per backend; the tensors are freed when it returns."""
    x = torch.randn(*shape, device=dev)
    y = torch.randn(*shape, device=dev)
    m = shape[0] // pac
    a = torch.rand(m, device=dev)
    nbytes = x.numel() * x.element_size()
    ref = autograd_interpolate(x, y, a, pac)
    rn = x.reshape(m, -1).double().norm(dim=1)
    copy_ms = ms(lambda: x.clone())
    copy_gbs = 2 * nbytes / copy_ms / 1e6
    print(f"{shape} pac={pac} {nbytes / 2**20:.0f} MiB: copy {copy_ms:.4f} ms "
          f"({copy_gbs:.0f} GB/s read+write)", flush=True)
    one = torch.ones((), device=dev)
    for name in ("cuda", "triton"):
        be = backends.get(name)
        out = be.interpolate(x, y, a, pac)
        _, n = be.penalty_forward(x, None, pac, 1.0, False, 0.0, 1.0, 1, 1.0)
        calls = {
            "interpolate": (3, lambda: be.interpolate(x, y, a, pac)),  # noqa: B023
            "penalty_forward": (1, lambda: be.penalty_forward(  # noqa: B023
                x, None, pac, 1.0, False, 0.0, 1.0, 1, 1.0)),
            "penalty_backward": (2, lambda: be.penalty_backward(  # noqa: B023
                one, None, x, n, None, pac, 1.0, False, 1.0, 1, 1.0)),  # noqa: B023
        }
        errs = (f"interp max err {(out - ref).abs().max().item():.2e}, norm max rel err "
                f"{((n.double() - rn).abs() / rn).max().item():.2e}")
        cells = []
        for op, (k, f) in calls.items():
            t = ms(f)
            gbs = k * nbytes / t / 1e6
            k_us = kernel_us(f)
            cells.append(f"{op} {t:.4f} ms {gbs:.0f} GB/s {100 * gbs / copy_gbs:.0f}% "
                         f"(kernels {k_us:.1f} us, {k * nbytes / k_us / 1e3:.0f} GB/s)")
        print(f"  {name:6s} " + " | ".join(cells) + f" | {errs}", flush=True)


def main():
    for shape, pac in SHAPES:
        diagnose(shape, pac)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
