"""Backend choice: what "auto" picks, the environment override, and errors that say how to fix."""

from __future__ import annotations

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
