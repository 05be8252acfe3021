"""CTGAN with the fused gradient penalty: one line before `CTGAN(...).fit(...)`.

    from wgangp_fast.integrations import ctgan as wgf_ctgan
    wgf_ctgan.patch()

`patch()` swaps `ctgan.synthesizers.ctgan.Discriminator.calc_gradient_penalty` for the fused
version. `CTGAN.fit` is unchanged: it still calls the method with its own device and pac, and the
replacement draws alpha exactly as CTGAN does (`torch.rand(N // pac, 1, 1, device=device)`, on
the `device` argument, moved to the data), so a seeded fit consumes the same random numbers and
gives the same penalties, up to float32 rounding.

Safety: the installed CTGAN's method must have the signature this was written against,
`(self, real_data, fake_data, device='cpu', pac=10, lambda_=10)` (as in CTGAN 0.12.1), or
`patch()` raises `IncompatibleSignatureError`. Patching twice with the same options warns and
does nothing; with other options it raises ValueError. `unpatch()` restores the original function
object itself. With `verify=True` (the default) the first patched call runs CTGAN's own method for
real and checks the fused penalty against it (`first_call`).
"""

from __future__ import annotations

import contextlib
import importlib
import warnings
from typing import Iterator

from .ctgan_signature import builder
from .patching import (
    IncompatibleSignatureError,
    PatchHandle,
    get_handle,
    validate_options,
)
from .patching import is_patched as _is_patched
from .patching import patch as _patch_class
from .patching import unpatch_method as _unpatch_method

__all__ = ["CTGAN_DEFAULTS", "IncompatibleSignatureError", "discriminator_class", "handle", "is_patched",
           "patch", "patched", "unpatch"]

METHOD = "calc_gradient_penalty"
CTGAN_DEFAULTS = {"device": "cpu", "pac": 10, "lambda_": 10}


def discriminator_class() -> type:
    """`ctgan.synthesizers.ctgan.Discriminator`, or an ImportError saying how to get it."""
    try:
        module = importlib.import_module("ctgan.synthesizers.ctgan")
    except ImportError as exc:
        raise ImportError("wgangp_fast.integrations.ctgan needs the ctgan package: "
                          "pip install ctgan") from exc
    cls = getattr(module, "Discriminator", None)
    if not isinstance(cls, type):
        raise IncompatibleSignatureError(
            f"ctgan.synthesizers.ctgan has no Discriminator class (ctgan "
            f"{_ctgan_version()}); this integration expects the layout of CTGAN 0.12")
    return cls


def _ctgan_version() -> str:
    try:
        return str(importlib.import_module("ctgan").__version__)
    except (ImportError, AttributeError):
        return "unknown version"


def _patch_ctgan(options: dict):
    cls = discriminator_class()
    try:
        return _patch_class(cls, METHOD, options, builder(options["backend"], CTGAN_DEFAULTS))
    except IncompatibleSignatureError as exc:
        raise IncompatibleSignatureError(
            f"cannot patch CTGAN {_ctgan_version()}: {exc}") from None


def patch(*, backend: str = "auto", verify: bool = True) -> PatchHandle:
    """Make every CTGAN Discriminator use the fused penalty; returns the handle.

    backend: wgangp_fast backend ("auto" picks the fastest for the data's device).
    verify: check the first call against the original method, which runs for real.
    Already patched with the same options: RuntimeWarning, nothing changes.
    """
    handle, _ = _patch_ctgan(validate_options(backend, verify))
    return handle


def unpatch() -> bool:
    """Put CTGAN's own method back (the same function object). False, with a warning, if not
    patched."""
    return _unpatch_method(discriminator_class(), METHOD)


def is_patched() -> bool:
    return _is_patched(discriminator_class(), METHOD)


def handle() -> PatchHandle | None:
    """The active patch's handle, or None."""
    return get_handle(discriminator_class(), METHOD)


@contextlib.contextmanager
def patched(*, backend: str = "auto", verify: bool = True) -> Iterator[PatchHandle]:
    """`with wgf_ctgan.patched(): model.fit(data)`. A patch made before the block stays."""
    options = validate_options(backend, verify)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        h, created = _patch_ctgan(options)
    try:
        yield h
    finally:
        if created and h.active:
            h.unpatch()
