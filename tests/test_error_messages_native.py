"""The host checks' error messages survive an extension that carries its own copy of libstdc++.

On the lent H100 (2026-11-22) the CUDA extension crashed inside its own copy of
std::ostream::_M_insert<long> while c10::str formatted "N=4" for a failed check, while messages of
strings formatted fine. Linking a small extension with -static-libstdc++ reproduces that failure
mode on this machine's toolchain (the integer is lost from the message: the stream fails instead
of crashing), so the checks in csrc/common/geometry.h, which every backend's host code uses, are
held here to messages that keep their numbers in such a build.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

SOURCE = r"""
#include <torch/library.h>

#include "common/geometry.h"

using at::Tensor;

// The hazard: an integer through `ostream << int64_t` in this extension's own libstdc++.
Tensor raw_format(const Tensor& t, int64_t pac) {
  TORCH_CHECK(false, "the batch size N=", t.size(0), " must be a multiple of pac=", pac);
  return t;
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

TORCH_LIBRARY(wgangp_fast_static_stdcxx, m) {
  m.def("raw_format(Tensor t, int pac) -> Tensor", &raw_format);
  m.def("geometry(Tensor t, int pac) -> Tensor", &geometry);
  m.def("vector(Tensor t, int m) -> Tensor", &vector);
  m.def("reduction(Tensor t, int reduction) -> Tensor", &reduction);
  m.def("grad_out(Tensor grad_out, Tensor grads, Tensor norms, int reduction) -> Tensor", &grad_out);
}
"""


@pytest.fixture(scope="module")
def static_ops(tmp_path_factory):
    from torch.utils import cpp_extension

    env_bin = str(Path(sys.executable).parent)  # the virtual environment's ninja
    if shutil.which("ninja") is None and shutil.which("ninja", path=env_bin):
        os.environ["PATH"] = env_bin + os.pathsep + os.environ.get("PATH", "")

    build = tmp_path_factory.mktemp("static_stdcxx")
    source = build / "static_stdcxx.cpp"
    source.write_text(SOURCE)
    cpp_extension.load(name="wgangp_fast_static_stdcxx", sources=[str(source)],
                       extra_include_paths=[str(ROOT / "csrc")],
                       extra_ldflags=["-static-libstdc++"], build_directory=str(build),
                       is_python_module=False, verbose=False)
    return torch.ops.wgangp_fast_static_stdcxx


def _message(fn, *args) -> str:
    with pytest.raises(RuntimeError) as err:
        fn(*args)
    return str(err.value).splitlines()[0]


def test_the_failure_mode_is_reproduced(static_ops):
    """Without this, the test below would prove nothing: here `ostream << int64_t` in the
    extension loses the number, as it crashed on the H100."""
    message = _message(static_ops.raw_format, torch.zeros(4), 3)
    assert message.startswith("the batch size N=")
    assert "4" not in message and "pac=3" not in message


def test_host_checks_keep_their_numbers(static_ops):
    x = torch.zeros(4, 2)
    assert "the batch size N=4 must be a multiple of pac=3" in _message(static_ops.geometry, x, 3)
    assert "alpha must hold M=5 values, got 4" in _message(static_ops.vector, torch.zeros(4), 5)
    assert "unknown reduction 7" in _message(static_ops.reduction, x, 7)
    assert "grad_out has 3 values for reduction 1" in _message(
        static_ops.grad_out, torch.zeros(3), x, torch.zeros(4), 1)
