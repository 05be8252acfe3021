"""Backend choice: what "auto" picks, the environment override, and errors that say how to fix."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch

import wgangp_fast
from wgangp_fast import backends


def test_status_lists_every_backend_and_cpu_ones_are_available():
    status = wgangp_fast.backend_status()
    assert set(status) == {"cuda", "triton", "cpu", "reference"}
    available = wgangp_fast.available_backends()
    assert "reference" in available and "cpu" in available
    for name in available:
        assert status[name].startswith("available")


def test_auto_picks_the_compiled_cpu_backend_for_cpu_tensors(monkeypatch):
    monkeypatch.delenv("WGANGP_FAST_BACKEND", raising=False)
    assert backends.resolve("auto", torch.device("cpu")) == "cpu"
    assert backends.resolve(None, torch.device("cpu")) == "cpu"


def test_environment_overrides_auto_only(monkeypatch):
    monkeypatch.setenv("WGANGP_FAST_BACKEND", "reference")
    assert backends.resolve("auto", torch.device("cpu")) == "reference"
    assert backends.resolve("cpu", torch.device("cpu")) == "cpu"


def test_explicit_unavailable_backend_says_how_to_get_it(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = torch.randn(4, 3)
    with pytest.raises(RuntimeError, match="cuda"):
        wgangp_fast.interpolate(x, x, backend="cuda")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
            wgangp_fast.gradient_norm_penalty(x, backend="triton")


def test_reference_and_cpu_backends_agree():
    torch.manual_seed(0)
    g = torch.randn(30, 17)
    a = wgangp_fast.gradient_norm_penalty(g, pac=3, backend="cpu")
    b = wgangp_fast.gradient_norm_penalty(g, pac=3, backend="reference")
    torch.testing.assert_close(a, b)


def check_stable_abi_only(path: str) -> None:
    """The library at `path` imports no C++ symbol of torch (whose mangled names change between
    releases: a wheel that did loaded under only the torch it was built with, failing elsewhere
    with `undefined symbol: _ZN5torch8autograd13_wrap_outputs...`) and nothing of Python's C API:
    only torch's C shim (aoti_torch_*, torch_*) and the C/C++ (and CUDA) runtimes."""
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("no nm (binutils) to list the library's symbols with")
    listed = subprocess.run([nm, "-D", "--undefined-only", path], check=True,
                            capture_output=True, text=True).stdout.split()
    undefined = [name.split("@")[0] for name in listed if name not in ("U", "w", "v")]
    torch_cpp = [n for n in undefined if n.startswith(("_ZN2at", "_ZN3c10", "_ZN5torch"))]
    python = [n for n in undefined if n.startswith(("Py", "_Py"))]
    assert torch_cpp == [] and python == [], (path, torch_cpp[:5], python[:5])
    assert any(n.startswith("aoti_torch_") for n in undefined), (path, undefined[:20])


def test_cpu_library_uses_only_the_stable_abi():
    lib = backends._cpu_extension()
    assert lib.loaded, lib.error
    check_stable_abi_only(lib.path)
