"""Which backend computes an op, and what each one needs.

Every backend provides the same four functions, with the signatures of the kernel-op schemas in
csrc/ops.cpp:

    interpolate(real, fake, alpha, pac) -> x
    interpolate_backward(grad, real, fake, alpha, pac) -> (d_real, d_fake, d_alpha)
    penalty_forward(grads, weight, pac, target, one_sided, eps, input_scale, reduction, scale)
        -> (out, norms)
    penalty_backward(grad_out, grad_norms, grads, norms, weight, pac, target, one_sided,
                     input_scale, reduction, scale) -> d_grads

alpha is [M] in the accumulation dtype; reduction is 0 (none), 1 (mean) or 2 (sum).
"""

from __future__ import annotations

import functools
import importlib
import os
from types import SimpleNamespace

import torch

BACKENDS = ("cuda", "triton", "cpu", "reference")
# The backends whose kernels are the compiled kernel ops, with their autograd in C++.
COMPILED = ("cpu", "cuda")
ENV_VAR = "WGANGP_FAST_BACKEND"

_BUILD_HINT = (
    "reinstall from the source tree with `pip install --no-build-isolation -e .` "
    "(see README, 'Install')"
)


@functools.cache
def _load_extension(name: str):
    """Import a compiled extension; returns (module or None, reason it is missing)."""
    try:
        return importlib.import_module(f"wgangp_fast.{name}"), ""
    except ImportError as err:
        return None, str(err)


def _cpu_extension():
    return _load_extension("_C")


def _cuda_extension():
    mod, why = _cpu_extension()
    if mod is None:
        return None, f"the CPU extension is missing too ({why})"
    return _load_extension("_C_cuda")


@functools.cache
def _triton_status():
    try:
        import triton  # noqa: F401
    except ImportError as err:
        return False, f"triton is not installed ({err})"
    return True, ""


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def backend_status() -> dict:
    """A line per backend: 'available ...' or why it is not."""
    status = {}
    cuda_mod, cuda_why = _cuda_extension()
    gpu = torch.cuda.is_available()
    if cuda_mod is None:
        status["cuda"] = f"not compiled with CUDA ({cuda_why}); {_BUILD_HINT} with a CUDA toolkit"
    elif not gpu:
        status["cuda"] = "compiled, but no CUDA device is visible"
    else:
        status["cuda"] = "available (CUDA tensors)"
    ok, why = _triton_status()
    if not ok:
        status["triton"] = f"unavailable: {why}; pip install triton"
    elif gpu:
        status["triton"] = "available (CUDA tensors)"
    elif triton_interpreted():
        status["triton"] = "available (CPU tensors, TRITON_INTERPRET=1)"
    else:
        status["triton"] = "installed, but no CUDA device (set TRITON_INTERPRET=1 for CPU tensors)"
    cpu_mod, cpu_why = _cpu_extension()
    status["cpu"] = "available (CPU tensors)" if cpu_mod is not None else (
        f"not built ({cpu_why}); {_BUILD_HINT}")
    status["reference"] = "available (any device, plain PyTorch ops)"
    return status


def available_backends() -> list:
    """The backends that can run on this machine, in the order "auto" prefers them."""
    return [name for name, line in backend_status().items() if line.startswith("available")]


def _usable(name: str, device: torch.device) -> str:
    """'' if backend `name` can run on tensors on `device`, else the reason it cannot."""
    if name == "reference":
        return ""
    if name == "cpu":
        mod, why = _cpu_extension()
        if mod is None:
            return f"the cpu backend is not built ({why}); {_BUILD_HINT}"
        return "" if device.type == "cpu" else f"the cpu backend takes CPU tensors, got {device}"
    if name == "cuda":
        mod, why = _cuda_extension()
        if mod is None:
            return (f"wgangp_fast was not compiled with CUDA ({why}); {_BUILD_HINT} on a machine "
                    "with a CUDA toolkit (CUDA_HOME) and a CUDA build of torch")
        return "" if device.type == "cuda" else f"the cuda backend takes CUDA tensors, got {device}"
    if name == "triton":
        ok, why = _triton_status()
        if not ok:
            return f"the triton backend needs triton: {why}"
        if device.type == "cuda" or (device.type == "cpu" and triton_interpreted()):
            return ""
        return (f"the triton backend takes CUDA tensors (or CPU tensors with TRITON_INTERPRET=1), "
                f"got {device}")
    raise AssertionError(name)


# Successful resolutions by (backend, device type) and, for "auto", WGANGP_FAST_BACKEND: the
# inputs to the choice that can change while the process runs (TRITON_INTERPRET cannot: triton
# reads it once, at import). Saves several microseconds per op.
_RESOLVED: dict = {}


# Under torch.compile the choice is made once, at trace time, and baked into the graph.
@torch.compiler.assume_constant_result
def resolve(backend, device: torch.device) -> str:
    """The concrete backend for tensors on `device`: checks an explicit choice, picks for "auto"."""
    key = (backend, device.type, os.environ.get(ENV_VAR) if backend in ("auto", None) else None)
    try:
        return _RESOLVED[key]
    except (KeyError, TypeError):
        pass
    name = _resolve(backend, device)  # raises for anything but a valid name or None
    _RESOLVED[key] = name
    return name


def _resolve(backend, device: torch.device) -> str:
    if backend is None:
        backend = "auto"
    if not isinstance(backend, str) or backend not in BACKENDS + ("auto",):
        raise ValueError(f"backend must be one of 'auto', {', '.join(map(repr, BACKENDS))}, "
                         f"got {backend!r}")
    from_env = False
    if backend == "auto":
        env = os.environ.get(ENV_VAR, "").strip()
        if env and env != "auto":
            if env not in BACKENDS:
                raise ValueError(f"{ENV_VAR} must be one of 'auto', "
                                 f"{', '.join(map(repr, BACKENDS))}, got {env!r}")
            backend, from_env = env, True
    if backend == "auto":
        # On CUDA tensors the compiled kernels first: as fast as triton's on large batches and
        # up to 2x faster on small ones, through their lower host cost per launch (README,
        # "GPU kernels").
        order = ("cuda", "triton") if device.type == "cuda" else ("cpu",)
        for name in order:
            if not _usable(name, device):
                return name
        return "reference"
    why = _usable(backend, device)
    if why:
        if from_env:
            raise RuntimeError(f"{ENV_VAR}={backend} (from the environment) asks for a backend "
                               f"that is unavailable: {why}; unset {ENV_VAR} (or set it to "
                               f"auto) to let wgangp_fast choose")
        raise RuntimeError(f"backend={backend!r} is unavailable: {why}")
    return backend


def _below_autograd(op):
    """`op` called past its Autograd key. The backward kernel ops' autograd (their second order,
    registered in Python by ops/ for the C++ first-order backward's create_graph=True) costs
    ~10 us per call even where it records nothing; every caller reaching them through this table
    (the registered ops, the autograd.Function twins, the diagnostics) has its own autograd or
    none, so it skips it. The forward kernel ops keep theirs: in C++, it is free when idle, and
    it is the eager API's autograd."""

    def call(*args):
        with torch._C._AutoDispatchBelowAutograd():
            return op(*args)

    return call


@functools.cache
def get(name: str):
    """The four functions of backend `name` (already resolved)."""
    if name in ("cpu", "cuda"):
        if name == "cuda":
            _cuda_extension()
        else:
            _cpu_extension()
        ops = torch.ops.wgangp_fast
        return SimpleNamespace(
            interpolate=ops.interpolate_kernel,
            interpolate_backward=_below_autograd(ops.interpolate_backward_kernel),
            penalty_forward=ops.penalty_forward_kernel,
            penalty_backward=_below_autograd(ops.penalty_backward_kernel),
        )
    if name == "triton":
        from . import triton as mod
    elif name == "reference":
        from . import reference as mod
    else:
        raise ValueError(f"unknown backend {name!r}")
    return SimpleNamespace(
        interpolate=mod.interpolate,
        interpolate_backward=mod.interpolate_backward,
        penalty_forward=mod.penalty_forward,
        penalty_backward=mod.penalty_backward,
    )
