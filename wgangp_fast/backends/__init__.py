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

import ctypes
import functools
import importlib.machinery
import importlib.util
import os
import sys
import warnings
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Optional

import torch

BACKENDS = ("cuda", "triton", "cpu", "reference")
# The backends whose kernels are the compiled kernel ops (csrc/, the libraries below).
COMPILED = ("cpu", "cuda")
ENV_VAR = "WGANGP_FAST_BACKEND"
# The compiled libraries of each compiled backend: the CPU one defines the kernel ops' schemas,
# the CUDA one adds their CUDA kernels.
LIBRARIES = {"cpu": "_C", "cuda": "_C_cuda"}
# The oldest torch whose LibTorch stable ABI the libraries are built for (setup.py).
MIN_TORCH = (2, 10)

# The advice of the errors, for an install from a wheel as for a source checkout.
_REINSTALL_HINT = (
    "reinstall wgangp_fast: `pip install --force-reinstall --no-deps <the wgangp_fast wheel>`, or "
    "in a source checkout `pip install --no-build-isolation -e .`"
)
_CUDA_BUILD_HINT = (
    "the CUDA library is built from the sources, on a machine with a CUDA toolkit (nvcc; "
    "CUDA_HOME) and a CUDA build of torch (no GPU needed): in a source checkout, "
    "`WGANGP_FAST_FORCE_CUDA=1 pip install --no-build-isolation -e .`, or "
    "`WGANGP_FAST_WHEEL_CUDA=1 make wheel` for a wheel that holds it"
)


class ExtensionWarning(RuntimeWarning):
    """A compiled library is in the package but does not load, so backend="auto" runs a slower
    backend than the package was installed for."""


@dataclass(frozen=True)
class Library:
    """A compiled library of the package: where it is, and whether it loaded."""

    name: str            # "_C" or "_C_cuda"
    path: Optional[str]  # the file, None when the package holds none
    error: str = ""      # why it did not load ("" when it did)

    @property
    def loaded(self) -> bool:
        return self.path is not None and not self.error


def _library_path(name: str) -> Optional[str]:
    """The file of compiled library wgangp_fast.<name> (e.g. wgangp_fast/_C.abi3.so): the one
    beside the package's Python files when there is one (an installed wheel, an in-place build),
    else where the import system finds that extension module (an editable install's finder can map
    it elsewhere); None when there is none. Beside the Python files comes first: an editable
    install's finder maps wgangp_fast._C to its own checkout's library even when another copy of
    the package is imported (through PYTHONPATH, say), and that library may be another build."""
    package = sys.modules[__name__.rpartition(".")[0]]
    for folder in getattr(package, "__path__", ()):
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(folder, name + suffix)
            if os.path.isfile(path):
                return path
    spec = importlib.util.find_spec(f"{package.__name__}.{name}")
    return spec.origin if spec is not None and spec.origin else None


def _torch_too_old() -> bool:
    release = torch.__version__.split("+")[0].split(".")
    try:
        return (int(release[0]), int(release[1])) < MIN_TORCH
    except (IndexError, ValueError):
        return False


@functools.cache
def _load_library(name: str) -> Library:
    """Loads wgangp_fast.<name> with torch.ops.load_library, which runs its kernel registrations
    (the libraries hold no Python module: they are built on the stable ABI, without Python's C API)."""
    path = _library_path(name)
    if path is None:
        return Library(name, None, f"the package holds no wgangp_fast/{name} library: it was not built")
    try:
        torch.ops.load_library(path)
    except (OSError, RuntimeError) as err:
        # load_library raises "Could not load this library" from the loader's own error, which
        # says why (e.g. "undefined symbol: ..."): that is the one to report.
        cause = err.__cause__ or err
        return Library(name, path, f"{path} does not load under torch {torch.__version__}: "
                                   f"{str(cause).strip()}")
    return Library(name, path)


def _cpu_extension() -> Library:
    return _load_library(LIBRARIES["cpu"])


def _cuda_extension() -> Library:
    cpu = _cpu_extension()
    if not cpu.loaded:
        return Library(LIBRARIES["cuda"], None, f"the CPU library is unavailable too ({cpu.error})")
    return _load_library(LIBRARIES["cuda"])


def cuda_targets() -> Optional[str]:
    """The GPU code the CUDA library holds (e.g. sm80_sm90_ptx90: SASS for sm_80 and sm_90, PTX
    for compute_90), or None without a loaded CUDA library."""
    lib = _cuda_extension()
    if not lib.loaded:
        return None
    query = ctypes.CDLL(lib.path).wgangp_fast_cuda_targets  # the library torch already loaded
    query.restype = ctypes.c_char_p
    return query().decode()


def _fix_hint(backend: str = "cpu") -> str:
    if backend == "cuda" and torch.version.cuda is None:
        return (f"torch {torch.__version__} is a CPU build: the cuda backend needs a CUDA build "
                "of torch")
    if _torch_too_old():
        return (f"the compiled libraries need torch >= {MIN_TORCH[0]}.{MIN_TORCH[1]} (this is "
                f"{torch.__version__}): upgrade torch")
    return f"{_REINSTALL_HINT} (any wgangp_fast wheel serves torch >= 2.10)"


# The backends whose library failures have been reported, so each is reported once a process.
_WARNED: set = set()


def _warn_unloadable(backend: str) -> None:
    """Warns, once a process, that `backend`'s compiled library is in the package but does not
    load, and says why and how to fix it. A library that was never built is not a failure for
    cuda (a CPU-only install), but is for cpu, which every install builds."""
    lib = _cpu_extension() if backend == "cpu" else _cuda_extension()
    if lib.loaded or backend in _WARNED:
        return
    if lib.path is None and backend == "cuda" and _cpu_extension().loaded:
        return
    _WARNED.add(backend)
    fallback = "triton or reference" if backend == "cuda" else "reference"
    warnings.warn(f"wgangp_fast: the compiled {backend} backend is unavailable: {lib.error}. "
                  f'backend="auto" runs the {fallback} backend instead, which is slower. Fix: '
                  f"{_fix_hint(backend)}.", ExtensionWarning, stacklevel=_outside_stacklevel())


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _outside_stacklevel() -> int:
    """warnings.warn's stacklevel of the first caller outside this package, so the warning
    points at the user's line, through whichever public function reached the choice."""
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(
            _PACKAGE_DIR + os.sep):
        frame, level = frame.f_back, level + 1
    return level


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
    cuda = _cuda_extension()
    gpu = torch.cuda.is_available()
    if cuda.path is None:
        status["cuda"] = f"not compiled with CUDA ({cuda.error}); {_CUDA_BUILD_HINT}"
    elif not cuda.loaded:
        status["cuda"] = f"compiled, but does not load: {cuda.error}; {_fix_hint('cuda')}"
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
    cpu = _cpu_extension()
    if cpu.loaded:
        status["cpu"] = "available (CPU tensors)"
    elif cpu.path is None:
        status["cpu"] = f"not built ({cpu.error}); {_REINSTALL_HINT}"
    else:
        status["cpu"] = f"compiled, but does not load: {cpu.error}; {_fix_hint()}"
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
        lib = _cpu_extension()
        if lib.path is None:
            return f"the cpu backend is not built ({lib.error}); {_REINSTALL_HINT}"
        if not lib.loaded:
            return f"the cpu backend's library does not load: {lib.error}; {_fix_hint()}"
        return "" if device.type == "cpu" else f"the cpu backend takes CPU tensors, got {device}"
    if name == "cuda":
        lib = _cuda_extension()
        if lib.path is None:
            return f"wgangp_fast was not compiled with CUDA ({lib.error}); {_CUDA_BUILD_HINT}"
        if not lib.loaded:
            return f"the cuda backend's library does not load: {lib.error}; {_fix_hint('cuda')}"
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


def _constant_under_compile(fn):
    """torch.compiler.assume_constant_result(fn) without importing torch._dynamo (which doubles
    the time of `import torch`) before anything compiles. That decorator only sets a flag on fn
    that dynamo reads when it traces; tests/test_import.py holds this copy to the flags it sets."""
    if "torch._dynamo" in sys.modules:
        return torch.compiler.assume_constant_result(fn)
    fn._dynamo_marked_constant = True
    return fn


# Under torch.compile the choice is made once, at trace time, and baked into the graph.
@_constant_under_compile
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
            if name in COMPILED:
                _warn_unloadable(name)
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
    """`op` called past its Autograd key. The kernel ops' autograd (registered in Python by ops/,
    for callers of torch.ops.wgangp_fast.*_kernel and for opcheck) costs ~10 us per call even
    where it records nothing; every caller reaching them through this table (the registered ops,
    the autograd.Functions of ops/, the diagnostics) has its own autograd or none, so it skips
    it. `op` is an OpOverload; its C++ callable is called without the Python __call__ frame."""
    below = torch._C._AutoDispatchBelowAutograd
    kernel = getattr(op, "_op", op)

    def call(*args):
        with below():
            return kernel(*args)

    return call


@functools.cache
def get(name: str):
    """The four functions of backend `name` (already resolved)."""
    if name in COMPILED:
        _cuda_extension() if name == "cuda" else _cpu_extension()
        ops = torch.ops.wgangp_fast
        return SimpleNamespace(
            interpolate=_below_autograd(ops.interpolate_kernel.default),
            interpolate_backward=_below_autograd(ops.interpolate_backward_kernel.default),
            penalty_forward=_below_autograd(ops.penalty_forward_kernel.default),
            penalty_backward=_below_autograd(ops.penalty_backward_kernel.default),
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
