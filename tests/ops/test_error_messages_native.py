"""The host checks' error messages survive an extension that carries its own copy of libstdc++.

On the lent H100 (2026-11-22) the CUDA extension crashed inside its own copy of
std::ostream::_M_insert<long> while c10::str formatted "N=4" for a failed check, while messages of
strings formatted fine. Linking a small extension with -static-libstdc++ reproduces that failure
mode (with GCC 12 the integer is lost from the message, the stream failing instead of crashing),
so the checks in csrc/common/geometry.h, which every backend's host code uses, are held here to
messages that keep their numbers in such a build (a stable-ABI extension, as the package's are). The calls run in child processes: where the
failure mode is a crash, it ends a child, not the test run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SOURCE = r"""
#include <sstream>

#include "common/geometry.h"

using wgangp_fast::Tensor;

// The hazard: an integer through `ostream << int64_t` in this extension's own libstdc++ (as
// torch's STD_TORCH_CHECK formats its message, __LINE__ included).
Tensor raw_format(const Tensor& t, int64_t pac) {
  std::ostringstream out;
  out << "the batch size N=" << t.size(0) << " must be a multiple of pac=" << pac;
  throw std::runtime_error(out.str());
}

Tensor geometry(const Tensor& t, int64_t pac) {
  wgangp_fast::group_geometry(t, pac, "grads");
  return t;
}

Tensor vector(const Tensor& t, int64_t m) {
  wgangp_fast::check_vector(t, m, "alpha");
  return t;
}

Tensor reduction(const Tensor& t, int64_t reduction) {
  wgangp_fast::check_penalty_args(t, 1, reduction);
  return t;
}

Tensor grad_out(const Tensor& grad_out, const Tensor& grads, const Tensor& norms,
                int64_t reduction) {
  wgangp_fast::check_penalty_backward_args(grad_out, grads, norms, 1, reduction);
  return grads;
}

STABLE_TORCH_LIBRARY(wgangp_fast_static_stdcxx, m) {
  m.def("raw_format(Tensor t, int pac) -> Tensor");
  m.def("geometry(Tensor t, int pac) -> Tensor");
  m.def("vector(Tensor t, int m) -> Tensor");
  m.def("reduction(Tensor t, int reduction) -> Tensor");
  m.def("grad_out(Tensor grad_out, Tensor grads, Tensor norms, int reduction) -> Tensor");
}

STABLE_TORCH_LIBRARY_IMPL(wgangp_fast_static_stdcxx, CPU, m) {
  m.impl("raw_format", TORCH_BOX(&raw_format));
  m.impl("geometry", TORCH_BOX(&geometry));
  m.impl("vector", TORCH_BOX(&vector));
  m.impl("reduction", TORCH_BOX(&reduction));
  m.impl("grad_out", TORCH_BOX(&grad_out));
}
"""


# Run by a child process: builds (or reuses) the extension, then makes the calls of one probe,
# printing each error's first line as soon as it is raised.
PROBE = r"""
import sys

import torch
from torch.utils import cpp_extension

build, source, csrc, probe = sys.argv[1:5]
cpp_extension.load(name="wgangp_fast_static_stdcxx", sources=[source], extra_include_paths=[csrc],
                   extra_cflags=["-DTORCH_TARGET_VERSION=0x020a000000000000"],
                   extra_ldflags=["-static-libstdc++"], build_directory=build,
                   is_python_module=False, verbose=False)
ops = torch.ops.wgangp_fast_static_stdcxx
x = torch.zeros(4, 2)
calls = {
    "build": [],
    "raw": [(ops.raw_format, (torch.zeros(4), 3))],
    "checks": [(ops.geometry, (x, 3)), (ops.vector, (torch.zeros(4), 5)),
               (ops.reduction, (x, 7)), (ops.grad_out, (torch.zeros(3), x, torch.zeros(4), 1))],
}[probe]
for fn, args in calls:
    try:
        fn(*args)
        print("no error", flush=True)
    except RuntimeError as err:
        print(str(err).splitlines()[0], flush=True)
"""


def _probe(folder: Path, probe: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env_bin = str(Path(sys.executable).parent)  # the virtual environment's ninja
    if shutil.which("ninja") is None and shutil.which("ninja", path=env_bin):
        env["PATH"] = env_bin + os.pathsep + env.get("PATH", "")
    return subprocess.run([sys.executable, "-c", PROBE, str(folder), str(folder / "ext.cpp"),
                           str(ROOT / "csrc"), probe],
                          capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cxx = os.environ.get("CXX", "c++")
    archive = subprocess.run([cxx, "-print-file-name=libstdc++.a"], capture_output=True,
                             text=True).stdout.strip()
    if not os.path.isabs(archive):  # the compiler prints the bare name when it has none
        pytest.skip(f"{cxx} has no static libstdc++ to link a test extension against")
    folder = tmp_path_factory.mktemp("static_stdcxx")
    (folder / "ext.cpp").write_text(SOURCE)
    proc = _probe(folder, "build")
    assert proc.returncode == 0, f"the test extension did not build:\n{proc.stderr[-3000:]}"
    return folder


def test_the_failure_mode_is_reproduced(built):
    """Without this, the test below would prove nothing: `ostream << int64_t` in such an
    extension loses the number (GCC 12) or crashes the process (GCC 13 on the H100)."""
    proc = _probe(built, "raw")
    lines = proc.stdout.splitlines()
    crashed = proc.returncode != 0
    assert crashed or (lines[0].startswith("the batch size N=") and "N=4" not in lines[0]
                       and "pac=3" not in lines[0]), proc.stdout + proc.stderr[-2000:]


def test_host_checks_keep_their_numbers(built):
    proc = _probe(built, "checks")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    messages = proc.stdout.splitlines()
    assert len(messages) == 4
    assert "the batch size N=4 must be a multiple of pac=3" in messages[0]
    assert "alpha must hold M=5 values, got 4" in messages[1]
    assert "unknown reduction 7" in messages[2]
    assert "grad_out has 3 values for reduction 1" in messages[3]
