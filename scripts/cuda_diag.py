"""Diagnose the cuda backend on a GPU: time each kernel op alone and compare with triton."""
import torch

import wgangp_fast as W

ops = torch.ops.wgangp_fast
dev = "cuda"


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


for shape, pac in [((64, 3, 512, 512), 1), ((131072, 50), 10), ((8, 3, 1024, 1024), 1)]:
    x = torch.randn(*shape, device=dev)
    y = torch.randn(*shape, device=dev)
    m = shape[0] // pac
    a = torch.rand(m, device=dev)
    ref = W.reference.interpolate(x, y, a, pac)
    for name in ("cuda", "triton"):
        be = W.backends.get(name)
        out = be.interpolate(x, y, a, pac)
        o, n = be.penalty_forward(x, None, pac, 1.0, False, 0.0, 1.0, 1, 1.0)
        rn = x.reshape(m, -1).double().norm(dim=1)
        g = be.penalty_backward(torch.ones((), device=dev), None, x, n, None, pac, 1.0, False, 1.0, 1, 1.0)
        print(shape, pac, name,
              "interp err", (out - ref).abs().max().item(),
              "norm relerr", ((n.double() - rn).abs() / rn).max().item(),
              "interp ms", round(ms(lambda: be.interpolate(x, y, a, pac)), 4),  # noqa: B023 (called at once)
              "fwd ms", round(ms(lambda: be.penalty_forward(x, None, pac, 1.0, False, 0.0, 1.0, 1, 1.0)), 4),  # noqa: B023 (called at once)
              "bwd ms", round(ms(lambda: be.penalty_backward(torch.ones((), device=dev), None, x, n, None, pac, 1.0, False, 1.0, 1, 1.0)), 4),  # noqa: B023 (called at once)
              flush=True)
print("copy ms", ms(lambda: x.clone()))
