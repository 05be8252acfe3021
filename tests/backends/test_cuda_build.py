"""The CUDA extension is built wherever a CUDA toolkit is, GPU or not (this runs on CPU machines):
it loads, registers the kernel ops for CUDA tensors, holds the GPU code it was built for, uses
16-byte loads and no atomics, links against no unstable torch C++ symbol, and the cuda backend
reports itself honestly."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import wgangp_fast
from wgangp_fast import backends

from .test_backends import check_stable_abi_only

KERNEL_OPS = ("interpolate_kernel", "interpolate_backward_kernel", "penalty_forward_kernel",
              "penalty_backward_kernel")
# setup.py's arch list when TORCH_CUDA_ARCH_LIST is unset and no GPU is visible: SASS for A100
# and H100/H200, PTX for newer GPUs.
DEFAULT_TARGETS = {"sm80", "sm90", "ptx90"}


def _nvcc():
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and Path(home, "bin", "nvcc").exists():
            return Path(home, "bin", "nvcc")
    found = shutil.which("nvcc")
    return Path(found) if found else None


def _why_no_build():
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is not a CUDA build"
    if _nvcc() is None:
        return "no CUDA toolkit: no nvcc at $CUDA_HOME, /usr/local/cuda or on PATH"
    if os.environ.get("WGANGP_FAST_SKIP_CUDA_BUILD", "").strip().lower() in ("1", "true", "yes"):
        return "WGANGP_FAST_SKIP_CUDA_BUILD is set"
    return None


pytestmark = pytest.mark.skipif(_why_no_build() is not None, reason=str(_why_no_build()))


def _cuobjdump():
    """cuobjdump from the toolkit, PATH, or the copy triton ships."""
    nvcc = _nvcc()
    candidates = [nvcc.parent / "cuobjdump"] if nvcc else []
    if shutil.which("cuobjdump"):
        candidates.append(Path(shutil.which("cuobjdump")))
    try:
        import triton

        bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
        candidates.append(bundled)
    except ImportError:
        pass
    return next((c for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)


@pytest.fixture(scope="module")
def cuda_module():
    lib = backends._cuda_extension()
    assert lib.loaded, (
        f"wgangp_fast/_C_cuda does not load ({lib.error}) although a CUDA toolkit is at "
        f"{_nvcc()}: rebuild with `pip install --no-build-isolation -e .` and read the build log")
    return lib


@pytest.fixture(scope="module")
def targets(cuda_module):
    listed = backends.cuda_targets()
    targets = set(listed.split("_"))
    assert targets and "unknown" not in targets, listed
    return targets


@pytest.fixture(scope="module")
def cuobjdump():
    tool = _cuobjdump()
    if tool is None:
        pytest.skip("no cuobjdump (CUDA toolkit or triton) to read the GPU code with")
    return tool


def _run(tool, *args):
    return subprocess.run([str(tool), *args], check=True, capture_output=True, text=True,
                          timeout=300).stdout


def test_library_loads_and_registers_the_kernel_ops_for_cuda(cuda_module):
    assert Path(cuda_module.path).name.startswith("_C_cuda.")
    for name in KERNEL_OPS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"wgangp_fast::{name}", "CUDA"), name
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"wgangp_fast::{name}", "CPU"), name


def test_targets_include_hopper_and_the_default_list(targets):
    # torch may build TORCH_CUDA_ARCH_LIST=9.0 as sm_90a (torch 2.11 did on the H100 machine).
    assert targets & {"sm90", "sm90a"}, f"no H100/H200 code in the build: {sorted(targets)}"
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        assert targets == DEFAULT_TARGETS


def test_shared_object_holds_the_sass_and_ptx_it_was_built_for(cuda_module, targets, cuobjdump):
    so = cuda_module.path
    elves = re.findall(r"ELF file\s+\d+:\s+(\w+)\.sm_(\w+)\.cubin",
                       _run(cuobjdump, "--list-elf", so))
    ptxs = re.findall(r"PTX file\s+\d+:\s+(\w+)\.sm_(\w+)\.ptx", _run(cuobjdump, "--list-ptx", so))
    want_sass = {t[2:] for t in targets if t.startswith("sm")}
    want_ptx = {t[3:] for t in targets if t.startswith("ptx")}
    for source in ("interpolate", "penalty"):
        assert {arch for src, arch in elves if src == source} == want_sass, (source, elves)
        assert {arch for src, arch in ptxs if src == source} == want_ptx, (source, ptxs)


@pytest.fixture(scope="module")
def sass(cuda_module, cuobjdump):
    """Kernel name -> its sm_90 (or first) SASS text."""
    text = _run(cuobjdump, "--dump-sass", cuda_module.path)
    functions = {}
    arch = None
    for block in re.split(r"\n(?=\s*code for sm_)", text):
        m = re.match(r"\s*code for sm_(\w+)", block)
        if not m:
            continue
        if arch is None or m.group(1) == "90":
            arch = m.group(1)
        for fm in re.finditer(r"Function : (\S+)(.*?)(?=Function : |\Z)", block, re.S):
            functions.setdefault(m.group(1), {})[fm.group(1)] = fm.group(2)
    assert functions, "no SASS found"
    return functions.get("90") or next(iter(functions.values()))


def test_kernels_use_16_byte_loads_and_no_atomics(sass):
    families = {"interpolate_kernel": 0, "penalty_backward_kernel": 0, "group_reduce_kernel": 0}
    for name, body in sass.items():
        # Reductions are deterministic: no floating-point (or any) atomics anywhere.
        assert not re.search(r"\b(ATOM|ATOMG|ATOMS|RED|REDG)\b", body), name
        for family in families:
            if family in name:
                families[family] += 1
                assert "LDG.E.128" in body, f"{name} has no 128-bit loads"
    # 4 dtypes; the group reduction has 2 ops x 3 worker widths.
    assert families == {"interpolate_kernel": 4, "penalty_backward_kernel": 4,
                        "group_reduce_kernel": 24}


def test_backend_status_describes_the_build(cuda_module):
    status = wgangp_fast.backend_status()["cuda"]
    if torch.cuda.is_available():
        assert status == "available (CUDA tensors)"
        assert "cuda" in wgangp_fast.available_backends()
    else:
        assert status == "compiled, but no CUDA device is visible"
        assert "cuda" not in wgangp_fast.available_backends()


def test_cuda_backend_on_cpu_tensors_is_a_clear_error(cuda_module, monkeypatch):
    monkeypatch.delenv("WGANGP_FAST_BACKEND", raising=False)
    x = torch.randn(4, 3)
    with pytest.raises(RuntimeError, match=r"backend='cuda'.*takes CUDA tensors, got cpu"):
        wgangp_fast.interpolate(x, x, backend="cuda")
    with pytest.raises(RuntimeError, match=r"backend='cuda'.*takes CUDA tensors, got cpu"):
        wgangp_fast.gradient_norm_penalty(x, backend="cuda")
    # "auto" never picks cuda for CPU tensors, even with the extension built.
    assert backends.resolve("auto", torch.device("cpu")) == "cpu"


def test_reduce_plans_cover_every_element_once(tmp_path):
    """csrc/cuda/launch.cuh's make_reduce_plan, compiled by nvcc into a host program and run here:
    for GPU-sized resident block counts (the first H100 run never split a group: every grid was
    clamped to one block), each plan covers every element once, in aligned chunks, in one wave,
    within its workspace (tests/backends/cuda/plan_check.cu)."""
    source = Path(__file__).parent / "cuda" / "plan_check.cu"
    exe = tmp_path / "plan_check"
    build = subprocess.run([str(_nvcc()), "-std=c++17", "-O1", "-o", str(exe), str(source)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout
    checked = re.search(r"checked (\d+) plans, 0 failures", run.stdout)
    assert checked and int(checked.group(1)) > 1000, run.stdout



def test_library_uses_only_the_stable_abi(cuda_module):
    check_stable_abi_only(cuda_module.path)
