"""Build wgangp_fast: the CPU extension always, the CUDA extension whenever a CUDA toolkit and a
CUDA build of torch are present (a visible GPU is not needed).

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
    # -fopenmp: at::parallel_for is header code that needs OpenMP to run in parallel; the
    # libgomp.so.1 it links is the one torch has already loaded.
    # -ffp-contract=off: no FMA contraction, so float32 interpolation matches eager bit for bit.
    # -fno-wrapv: Python's build flags (sysconfig CFLAGS, which torch's build passes on) hold
    # -fwrapv; defined signed overflow kept GCC from vectorising the reduction loops well (1
    # thread, 16 MiB float32 penalty forward: 3.1 ms with it, 1.8 ms without).
    return ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-wrapv"]


def _extensions():
    cpu_sources = [f"{CSRC}/ops.cpp", f"{CSRC}/autograd.cpp", f"{CSRC}/cpu/interpolate.cpp",
                   f"{CSRC}/cpu/penalty.cpp"]
    exts = [
        cpp_extension.CppExtension(
            "wgangp_fast._C",
            cpu_sources,
            extra_compile_args={"cxx": _cxx_flags()},
            extra_link_args=["-fopenmp"],
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
                        "cxx": ["-O3", f"-DWGANGP_FAST_CUDA_TARGETS={_cuda_targets()}"],
                        "nvcc": ["-O3", "--expt-relaxed-constexpr", "-lineinfo"],
                    },
                    depends=sorted(str(p.relative_to(ROOT)) for p in cuda_dir.glob("*.cuh")),
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
    """Builds each extension; a failed optional CUDA build warns and leaves the CPU build intact."""

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as err:
            if ext.name != "wgangp_fast._C_cuda" or _flag("WGANGP_FAST_FORCE_CUDA"):
                raise
            warnings.warn(f"wgangp_fast: the CUDA extension failed to build ({err}); "
                          "the cuda backend will be unavailable", stacklevel=1)


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
