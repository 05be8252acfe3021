"""Backend choice: what "auto" picks, the environment override, and errors that say how to fix."""

from __future__ import annotations

import shutil
import subprocess
import warnings

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


@pytest.fixture
def unloadable_cpu_library(tmp_path, monkeypatch):
    """The package's CPU library replaced by a real shared library that cannot load: it needs a
    C++ symbol of torch's autograd that this torch does not export, as a wheel built for another
    torch did before the stable ABI. The backend table's caches are cleared around the test."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("c++")
    if cc is None:
        pytest.skip("no C compiler to build a library that cannot load")
    source = tmp_path / "broken.c"
    source.write_text("void _ZN5torch8autograd13_wrap_outputsEv(void);\n"
                      "void wgangp_fast_probe(void) { _ZN5torch8autograd13_wrap_outputsEv(); }\n")
    broken = tmp_path / "_C.abi3.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(broken), str(source)], check=True,
                   capture_output=True, timeout=120)

    def clear():
        backends._load_library.cache_clear()
        backends._RESOLVED.clear()
        backends.get.cache_clear()
        getattr(backends, "_WARNED", set()).clear()

    clear()
    monkeypatch.setattr(backends, "_library_path",
                        lambda name: str(broken) if name == "_C" else None)
    monkeypatch.delenv("WGANGP_FAST_BACKEND", raising=False)
    yield broken
    monkeypatch.undo()
    clear()


def test_auto_warns_once_when_the_compiled_library_cannot_load(unloadable_cpu_library):
    """backend="auto" then runs the reference backend, as before, but says so once, with the
    reason (the loader's error) and the fix; an explicit backend="cpu" is an error saying the
    same; backend_status() too."""
    torch.manual_seed(0)
    real, fake = torch.randn(6, 5), torch.randn(6, 5)
    alpha = torch.rand(3)
    with pytest.warns(RuntimeWarning) as caught:
        x = wgangp_fast.interpolate(real, fake, alpha, pac=2)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    message = messages[0]
    assert str(unloadable_cpu_library) in message and "undefined symbol" in message
    assert "reference" in message and "pip install" in message
    assert caught[0].filename == __file__  # points at the caller's line
    torch.testing.assert_close(x, wgangp_fast.interpolate(real, fake, alpha, pac=2,
                                                          backend="reference"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wgangp_fast.gradient_norm_penalty(torch.randn(6, 5), pac=2)  # once a process
        wgangp_fast.interpolate(real, fake, alpha, pac=2)
    assert backends.resolve("auto", torch.device("cpu")) == "reference"
    with pytest.raises(RuntimeError, match="does not load.*undefined symbol"):
        wgangp_fast.interpolate(real, fake, alpha, pac=2, backend="cpu")
    status = wgangp_fast.backend_status()["cpu"]
    assert status.startswith("compiled, but does not load") and "undefined symbol" in status
    assert "cpu" not in wgangp_fast.available_backends()


def test_the_library_beside_the_package_comes_before_an_import_finders(monkeypatch, tmp_path):
    """An editable install's finder maps wgangp_fast._C to its own checkout's library even when
    another copy of the package is imported: the file beside the imported package's Python files
    is the one loaded; the import system's answer only where there is none beside them."""
    import importlib.machinery
    import importlib.util

    beside = tmp_path / ("_C" + importlib.machinery.EXTENSION_SUFFIXES[0])
    beside.write_bytes(b"")
    elsewhere = str(tmp_path / "elsewhere" / "_C.abi3.so")
    found = importlib.machinery.ModuleSpec("wgangp_fast._C", None, origin=elsewhere)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: found)
    monkeypatch.setattr(wgangp_fast, "__path__", [str(tmp_path)])
    assert backends._library_path("_C") == str(beside)
    beside.unlink()
    assert backends._library_path("_C") == elsewhere
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert backends._library_path("_C") is None
