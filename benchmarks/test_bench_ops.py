"""pytest-benchmark of the fused ops against the eager seed-000 code (`make bench`).

Same cases as `python benchmarks/run.py --suite ops` (wgangp_fast/bench/ops.py), fewer sizes; the
timed function synchronises the GPU, so a round is the whole op, not its launch.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from wgangp_fast import bench

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
GPU = DEVICE.type == "cuda"
SIZES_MIB = (1, 64) if GPU else (1, 16)
DTYPES = ("float32", "bfloat16") if GPU else ("float32",)
BACKENDS = bench.op_backends(DEVICE)

_cache: dict = {}


def op_inputs(shape: str, dtype: str, size_mib: float):
    """(input sets, pac, bytes per tensor); only the latest geometry is kept, to bound memory."""
    key = (shape, dtype, size_mib)
    if key not in _cache:
        _cache.clear()
        n, d, pac = bench.op_geometry(shape, int(size_mib * bench.MIB), bench.DTYPES[dtype])
        nbytes = n * d * torch.empty((), dtype=bench.DTYPES[dtype]).element_size()
        sets = bench.make_op_inputs(n, d, bench.DTYPES[dtype], DEVICE,
                                    bench.rotation_sets(4 * nbytes, DEVICE))
        _cache[key] = (sets, pac, nbytes)
    return _cache[key]


def _finite(out) -> bool:
    if isinstance(out, torch.Tensor):
        return bool(torch.isfinite(out.float()).all())
    return all(_finite(t) for t in out)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", bench.OP_NAMES)
@pytest.mark.parametrize("size_mib", SIZES_MIB)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", bench.SHAPES)
def test_op(benchmark, shape, dtype, size_mib, name, backend):
    sets, pac, nbytes = op_inputs(shape, dtype, size_mib)
    fn = bench.op_case(name, backend, sets, pac)
    counter = itertools.count()
    last = []

    def call():
        last[:] = [fn(next(counter))]
        bench.synchronize(DEVICE)

    benchmark.group = f"{name} {shape} {dtype} {size_mib} MiB"
    benchmark.extra_info.update(device=bench.device_label(DEVICE), size_bytes=nbytes,
                                traffic_bytes=bench.OP_TRAFFIC[name] * nbytes)
    benchmark(call)
    median = benchmark.stats.stats.median
    benchmark.extra_info["gbps"] = bench.OP_TRAFFIC[name] * nbytes / median / 1e9
    assert _finite(last[0])
    assert math.isfinite(median) and median > 0
