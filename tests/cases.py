"""The op test matrix shared by every backend and device.

WGANGP_FAST_TEST_DEVICE (default "cpu") and WGANGP_FAST_TEST_BACKENDS (default: "cpu,reference" on
CPU, plus "triton" when TRITON_INTERPRET=1; "cuda,triton,reference" on CUDA) choose what runs, so
the same comparisons serve the CPU run, the Triton-interpreter run and the GPU run.
"""

from __future__ import annotations

import os

import pytest
import torch

import wgangp_fast

DEVICE = torch.device(os.environ.get("WGANGP_FAST_TEST_DEVICE", "cpu"))
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"


def _default_backends():
    if DEVICE.type == "cuda":
        return ["cuda", "triton", "reference"]
    return ["cpu", "reference"] + (["triton"] if INTERPRETED else [])


BACKENDS = [b for b in os.environ.get("WGANGP_FAST_TEST_BACKENDS", ",".join(_default_backends())
                                      ).split(",") if b]


def backend_params(backends=None):
    """pytest params for the backends under test; triton ones carry the triton_interp mark on CPU."""
    params = []
    for b in backends or BACKENDS:
        marks = []
        if b == "triton" and DEVICE.type == "cpu":
            marks.append(pytest.mark.triton_interp)
        if b not in wgangp_fast.available_backends():
            marks.append(pytest.mark.skip(reason=f"backend {b}: {wgangp_fast.backend_status()[b]}"))
        params.append(pytest.param(b, marks=marks, id=b))
    return params


DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]

# (atol, rtol) against a float64 reference computed from the same (rounded) inputs.
TOL = {
    torch.float64: (1e-12, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.bfloat16: (1e-2, 1.6e-2),
    torch.float16: (1e-3, 2e-3),
}


def tol(dtype):
    atol, rtol = TOL[dtype]
    return {"atol": atol, "rtol": rtol}


def dtype_params(backend_name=None):
    params = []
    for dt in DTYPES:
        marks = []
        if dt == torch.bfloat16 and INTERPRETED and DEVICE.type == "cpu":
            marks.append(pytest.mark.skip(reason="the Triton interpreter has no bfloat16 "
                                                 "arithmetic; bfloat16 is tested on the GPU"))
        params.append(pytest.param(dt, marks=marks, id=str(dt).replace("torch.", "")))
    return params


# Per-sample shapes: D in {1, 7, 1023, 4097} and an image [C, H, W].
SAMPLE_SHAPES = [(1,), (7,), (1023,), (4097,), (3, 5, 7)]
PACS = [1, 2, 10]


def batch(n, sample_shape, dtype, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn((n, *sample_shape), generator=g, dtype=torch.float64) * scale
    return t.to(dtype).to(DEVICE)


def alpha_for(n, pac, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n // pac, generator=g, dtype=torch.float64).to(DEVICE)


PENALTY_PARAMS = [
    {},
    {"target": 0.0, "scale": 5.0},
    {"target": 0.5, "one_sided": True},
    {"eps": 1e-3, "input_scale": 0.25},
    {"reduction": "sum", "scale": 10.0},
    {"reduction": "none", "target": 2.0},
    {"weight": True, "reduction": "none"},
    {"weight": True, "target": 0.7, "one_sided": True, "input_scale": 3.0},
]


def penalty_param_id(p):
    return "-".join(f"{k}={v}" for k, v in p.items()) or "defaults"


# What a graph built by the fused penalty shows: the autograd.Function nodes of every path
# (ops/_dispatch.py) carry it in their names.
FUSED_GRAD_FN = "wgangp_fast_gradient_norm_penalty"


def node_name(grad_fn) -> str:
    """An autograd node's name. torch 2.11 refuses .name() on autograd.Function nodes, whose class
    carries the name; C++ nodes (class CppFunction) answer .name()."""
    try:
        return grad_fn.name()
    except Exception:
        return type(grad_fn).__name__
