"""The error paths of the cuda kernel ops, one call at a time, each announced before it runs: the
first H100 runs segfaulted in tests/test_gpu.py's error-path test. `make gpu-check` runs this
under cuda-gdb when that test crashes, to get the native backtrace of the crash."""
import sys

import torch

from wgangp_fast import backends

backends.get("cuda")  # loads the CUDA extension, which registers the CUDA kernels

ops = torch.ops.wgangp_fast
real = torch.randn(4, 3, device="cuda")
alpha = torch.rand(2, device="cuda")
CALLS = [
    ("interpolate, fake on cpu", lambda: ops.interpolate_kernel(real, real.cpu(), alpha, 2)),
    ("interpolate, float64 alpha", lambda: ops.interpolate_kernel(real, real, alpha.double(), 2)),
    ("penalty_forward, valid", lambda: ops.penalty_forward_kernel(
        real, None, 2, 1.0, False, 0.0, 1.0, 1, 1.0)),
    ("penalty_forward, N=4 pac=3", lambda: ops.penalty_forward_kernel(
        real, None, 3, 1.0, False, 0.0, 1.0, 1, 1.0)),
    ("penalty_forward, short weight", lambda: ops.penalty_forward_kernel(
        real, alpha[:1], 2, 1.0, False, 0.0, 1.0, 1, 1.0)),
]
for what, call in CALLS:
    print("calling:", what, flush=True)
    try:
        call()
        print("  returned", flush=True)
    except RuntimeError as err:
        print("  raised:", str(err).splitlines()[0], flush=True)
torch.cuda.synchronize()
print("done", flush=True)
sys.exit(0)
