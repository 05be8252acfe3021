"""Build wgangp_fast: the CPU extension always, the CUDA extension whenever a CUDA toolkit and a
CUDA build of torch are present (a visible GPU is not needed).

Both are built on the LibTorch stable ABI for torch 2.10 (TORCH_TARGET_VERSION) and use no Python C
API (py_limited_api): the package loads them with torch.ops.load_library, and one wheel
(cp39-abi3) serves every torch >= 2.10 and every CPython >= 3.9, whichever torch built it.

Environment switches:
  WGANGP_FAST_SKIP_CUDA_BUILD=1  build the CPU extension only.
  WGANGP_FAST_FORCE_CUDA=1       a CUDA build that cannot happen or fails is an error, not a warning.
  TORCH_CUDA_ARCH_LIST           the GPU architectures to compile for; unset, the visible GPU's, or
                                 "8.0;9.0+PTX" (A100, H100/H200, PTX for newer) when none is visible.
  MAX_JOBS                       parallel compile jobs (ninja).
"""

import os
import shutil
import warnings
from pathlib import Path

import torch
from setuptools import setup
from torch.utils import cpp_extension

ROOT = Path(__file__).resolve().parent
CSRC = "csrc"
DEFAULT_ARCH_LIST = "8.0;9.0+PTX"
# The oldest torch whose stable ABI the extensions use: the headers of a newer torch then hide
# every later API (and refuse torch's unstable C++ headers), so what builds runs on 2.10 and on.
TARGET_TORCH = (2, 10)
TARGET_FLAG = f"-DTORCH_TARGET_VERSION=0x{TARGET_TORCH[0]:02x}{TARGET_TORCH[1]:02x}000000000000"
# The oldest CPython of the abi3 wheel tag (cp39-abi3), as pyproject's requires-python says.
LIMITED_API = "cp39"


def _flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _cuda_home():
    """CUDA_HOME, else /usr/local/cuda when it holds nvcc (torch's own guess can be wrong)."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if not home and Path("/usr/local/cuda/bin/nvcc").exists():
        home = "/usr/local/cuda"
        os.environ["CUDA_HOME"] = home
    if not home and shutil.which("nvcc"):
        home = str(Path(shutil.which("nvcc")).resolve().parent.parent)
        os.environ["CUDA_HOME"] = home
    if home:
        # cpp_extension read CUDA_HOME at import time; tell it what we found.
        cpp_extension.CUDA_HOME = home
    return home


def _why_no_cuda():
    if _flag("WGANGP_FAST_SKIP_CUDA_BUILD"):
        return "WGANGP_FAST_SKIP_CUDA_BUILD is set"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is not a CUDA build"
    home = _cuda_home()
    if not home or not Path(home, "bin", "nvcc").exists():
        return "no CUDA toolkit (nvcc) found; set CUDA_HOME"
    return None


def _set_arch_list():
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return
    if torch.cuda.is_available():
        return  # torch compiles for the visible GPUs
    os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCH_LIST


def _cuda_targets():
    """The GPU code nvcc will emit, as one identifier (e.g. sm80_sm90_ptx90: SASS for sm_80 and
    sm_90, PTX for compute_90), compiled into wgangp_fast._C_cuda for the build test to check."""
    try:
        flags = cpp_extension._get_cuda_arch_flags()
    except Exception:  # a private helper of torch: its absence must not break the build
        return "unknown"
    targets = set()
    for flag in flags:
        code = flag.rpartition("code=")[2]
        kind, _, arch = code.partition("_")
        if kind in ("sm", "compute") and arch:
            targets.add(("sm" if kind == "sm" else "ptx") + arch)
    return "_".join(sorted(targets)) or "unknown"


def _cxx_flags():
    # No -fopenmp: the kernels' parallel loops are torch::stable::parallel_for, which runs in
    # torch's own thread pool.
    # -ffp-contract=off: no FMA contraction, so float32 interpolation matches eager bit for bit.
    # -fno-wrapv: Python's build flags (sysconfig CFLAGS, which torch's build passes on) hold
    # -fwrapv; defined signed overflow kept GCC from vectorising the reduction loops well (1
    # thread, 16 MiB float32 penalty forward: 3.1 ms with it, 1.8 ms without).
    return ["-O3", "-ffp-contract=off", "-fno-wrapv", TARGET_FLAG]


def _extensions():
    cpu_sources = [f"{CSRC}/ops.cpp", f"{CSRC}/cpu/interpolate.cpp", f"{CSRC}/cpu/penalty.cpp"]
    exts = [
        cpp_extension.CppExtension(
            "wgangp_fast._C",
            cpu_sources,
            extra_compile_args={"cxx": _cxx_flags()},
            depends=sorted(str(p.relative_to(ROOT)) for p in (ROOT / CSRC).glob("*/*.h")),
            py_limited_api=True,
        )
    ]
    reason = _why_no_cuda()
    if reason is None:
        _set_arch_list()
        cuda_dir = ROOT / CSRC / "cuda"
        cuda_sources = sorted(str(p.relative_to(ROOT)) for pattern in ("*.cu", "*.cpp")
                              for p in cuda_dir.glob(pattern))
        if cuda_sources:
            exts.append(
                cpp_extension.CUDAExtension(
                    "wgangp_fast._C_cuda",
                    cuda_sources,
                    extra_compile_args={
                        "cxx": ["-O3", TARGET_FLAG, "-DUSE_CUDA",
                                f"-DWGANGP_FAST_CUDA_TARGETS={_cuda_targets()}"],
                        "nvcc": ["-O3", "--expt-relaxed-constexpr", "-lineinfo"],
                    },
                    depends=sorted(str(p.relative_to(ROOT)) for p in cuda_dir.glob("*.cuh")),
                    py_limited_api=True,
                )
            )
        else:
            reason = "csrc/cuda holds no sources"
    if reason is not None:
        if _flag("WGANGP_FAST_FORCE_CUDA"):
            raise RuntimeError(f"WGANGP_FAST_FORCE_CUDA is set but the CUDA build cannot run: {reason}")
        warnings.warn(f"wgangp_fast: building without the CUDA extension ({reason})", stacklevel=1)
    return exts


class BuildExt(cpp_extension.BuildExtension):
    """Builds each extension; a failed optional CUDA build warns and leaves the CPU build intact.

    Removes the extension's other builds beside the new one (e.g. an in-place
    _C.cpython-311-x86_64-linux-gnu.so of an older build next to the new _C.abi3.so): the package
    loads the first it finds, in the interpreter's suffix order, which puts the old one first."""

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as err:
            if ext.name != "wgangp_fast._C_cuda" or _flag("WGANGP_FAST_FORCE_CUDA"):
                raise
            warnings.warn(f"wgangp_fast: the CUDA extension failed to build ({err}); "
                          "the cuda backend will be unavailable", stacklevel=1)

    def run(self):
        super().run()
        for ext in self.extensions:
            name = Path(self.get_ext_filename(ext.name))  # e.g. wgangp_fast/_C.abi3.so
            for built in (Path(self.get_ext_fullpath(ext.name)), ROOT / name):
                if not built.exists():
                    continue
                for other in built.parent.glob(built.name.split(".")[0] + ".*"):
                    if other != built and other.suffix in (".so", ".pyd"):
                        other.unlink()


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt},
      options={"bdist_wheel": {"py_limited_api": LIMITED_API}})
