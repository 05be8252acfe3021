"""Swap any class's CTGAN-signature gradient-penalty method for the fused one, and back.

A method qualifies when its parameters are exactly
`(self, real_data, fake_data, device, pac, lambda_)` (positional-or-keyword, defaults free) and it
computes CTGAN's penalty: one alpha per group of `pac` rows drawn as
`torch.rand(N // pac, 1, 1, device=device)`, the critic differentiated at the interpolates, the
norm taken over each group's `pac * D` values, `lambda_ * mean((norm - 1)^2)` returned.

    from wgangp_fast.integrations import patch_method
    handle = patch_method(MyDiscriminator)
    ...
    handle.unpatch()

Bad use is loud: a method with another signature raises `IncompatibleSignatureError` (a
TypeError); patching an already patched method with the same options warns and returns the
existing handle, with different options raises ValueError; unpatching puts back the very object
that was there (or removes the override, when the method was inherited). With `verify=True` (the
default) the first call also runs the original method on a copy of the RNG state and compares the
two penalties, so a method whose signature fits but whose formula does not is caught at once.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
import warnings
from typing import Any, Callable, Dict, Iterator, List, Tuple

import torch
from torch import Tensor

from .. import _validate as V
from .. import backends
from ..penalty import gradient_penalty

CTGAN_PARAMETERS = ("self", "real_data", "fake_data", "device", "pac", "lambda_")

_VERIFY_RTOL = 1e-3
_VERIFY_ATOL = 1e-5


class IncompatibleSignatureError(TypeError):
    """The method to patch does not have the CTGAN `calc_gradient_penalty` signature."""


def fused_calc_gradient_penalty(discriminator, real_data: Tensor, fake_data: Tensor,
                                device="cpu", pac: int = 10, lambda_: float = 10,
                                *, backend: str = "auto") -> Tensor:
    """CTGAN's penalty on the fused ops, drawing alpha exactly as CTGAN does.

    alpha is `torch.rand(N // pac, 1, 1, device=device)` on the `device` argument (which selects
    the RNG it comes from, so a seeded run stays bit-for-bit on the same random stream) and is then
    moved to where the data lives. The graph of real_data and fake_data is kept, as CTGAN keeps it.
    """
    V.pair(real_data, fake_data)
    m = V.pac(pac, real_data.shape[0], "real_data")
    alpha = torch.rand(m, 1, 1, device=device)
    return gradient_penalty(discriminator, real_data, fake_data, lambda_gp=lambda_, pac=pac,
                            alpha=alpha.to(real_data.device), backend=backend,
                            detach_inputs=False)


def check_signature(func: Callable, *, defaults: Dict[str, Any] | None = None,
                    where: str = "the method") -> inspect.Signature:
    """The signature of `func` if it is CTGAN's `calc_gradient_penalty` one, else an error.

    With `defaults` ({parameter: value}), those defaults must match too.
    """
    if not inspect.isfunction(func):
        raise IncompatibleSignatureError(
            f"{where} must be a plain function defined in the class body, got "
            f"{type(func).__name__}; staticmethods, classmethods and other descriptors cannot be "
            f"patched")
    sig = inspect.signature(func)
    params = list(sig.parameters.values())
    names = tuple(p.name for p in params)
    kinds_ok = all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params)
    if names != CTGAN_PARAMETERS or not kinds_ok:
        raise IncompatibleSignatureError(
            f"{where} has signature {sig}, expected the CTGAN calc_gradient_penalty signature "
            f"({', '.join(CTGAN_PARAMETERS)}) with positional-or-keyword parameters; "
            f"patching it would risk computing a different penalty than the code it replaces")
    for name, want in (defaults or {}).items():
        got = sig.parameters[name].default
        if got is inspect.Parameter.empty or got != want:
            raise IncompatibleSignatureError(
                f"{where} has signature {sig}: the default of {name!r} is "
                f"{'missing' if got is inspect.Parameter.empty else repr(got)}, expected {want!r}")
    return sig


_MISSING = object()


class PatchHandle:
    """One active swap of `cls.<name>`; `unpatch()` undoes it (once)."""

    def __init__(self, cls: type, name: str, original: Any, options: Dict[str, Any],
                 replacement: Callable):
        self.cls = cls
        self.name = name
        self.original = original
        self.options = dict(options)
        self.replacement = replacement
        self.verified = not options.get("verify", False)

    @property
    def active(self) -> bool:
        with _lock:
            return _registry.get((self.cls, self.name)) is self

    @property
    def original_function(self) -> Callable:
        """The function calls went to before the patch (inherited from a base, if not own)."""
        if self.original is not _MISSING:
            return self.original
        for base in self.cls.__mro__[1:]:
            if self.name in vars(base):
                return vars(base)[self.name]
        raise AttributeError(f"{self.cls.__qualname__}.{self.name} is gone from every base class")

    def unpatch(self) -> None:
        """Put back exactly what was there: the same function object, or the inherited one."""
        with _lock:
            if _registry.get((self.cls, self.name)) is not self:
                raise RuntimeError(f"this patch of {_qualname(self.cls, self.name)} is no longer "
                                   f"active (already unpatched)")
            current = vars(self.cls).get(self.name, _MISSING)
            if current is not self.replacement:
                raise RuntimeError(
                    f"{_qualname(self.cls, self.name)} was replaced by {current!r} after "
                    f"wgangp_fast patched it; refusing to overwrite that. Restore the wgangp_fast "
                    f"replacement (handle.replacement) first, then unpatch")
            if self.original is _MISSING:
                delattr(self.cls, self.name)
            else:
                setattr(self.cls, self.name, self.original)
            del _registry[(self.cls, self.name)]

    def __repr__(self) -> str:
        state = "active" if self.active else "inactive"
        return f"<PatchHandle {_qualname(self.cls, self.name)} {self.options} ({state})>"


_lock = threading.RLock()
_registry: Dict[Tuple[type, str], PatchHandle] = {}


def _qualname(cls: type, name: str) -> str:
    return f"{cls.__module__}.{cls.__qualname__}.{name}"


def _cuda_indices(*devices) -> List[int]:
    out = []
    for d in devices:
        if d is None:
            continue
        d = torch.device(d)
        if d.type == "cuda":
            out.append(d.index if d.index is not None else torch.cuda.current_device())
    return sorted(set(out))


@contextlib.contextmanager
def _buffers_restored(module):
    """Leave a module's buffers (BatchNorm statistics and the like) as they were."""
    if not isinstance(module, torch.nn.Module):
        yield
        return
    saved = [(b, b.detach().clone()) for b in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, copy in saved:
                b.copy_(copy)


def _original_value(original: Callable, args: tuple, kwargs: dict, owner, real,
                    device) -> Tensor:
    """The original method's penalty on a forked RNG state, the caller's state left untouched."""
    with torch.random.fork_rng(devices=_cuda_indices(getattr(real, "device", None), device)):
        with _buffers_restored(owner):
            value = original(*args, **kwargs)
    if not isinstance(value, Tensor):
        raise TypeError(f"the original method returned {type(value).__name__}, not a Tensor")
    return value.detach()


def _compare(handle: PatchHandle, fused: Tensor, original: Tensor) -> None:
    f = fused.detach().to(torch.float64).cpu()
    o = original.to(torch.float64).cpu()
    if f.shape != o.shape or not torch.allclose(f, o, rtol=_VERIFY_RTOL, atol=_VERIFY_ATOL):
        raise RuntimeError(
            f"wgangp_fast's penalty ({f.tolist()}) differs from the original "
            f"{_qualname(handle.cls, handle.name)} ({o.tolist()}) for the same RNG state: the "
            f"method has the CTGAN signature but not CTGAN's formula, so patching it would change "
            f"training. Unpatch it (handle.unpatch()) and call wgangp_fast.gradient_penalty with "
            f"the matching options instead")


def _make_replacement(handle_box: list, original: Callable, sig: inspect.Signature,
                      backend: str) -> Callable:
    @functools.wraps(original)
    def calc_gradient_penalty(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        handle = handle_box[0]
        reference = None
        if not handle.verified:
            try:
                reference = _original_value(original, args, kwargs, a["self"], a["real_data"],
                                            a["device"])
            except Exception as exc:  # the unpatched code would fail here too: say so, go on
                warnings.warn(
                    f"could not check wgangp_fast's penalty against the original "
                    f"{_qualname(handle.cls, handle.name)}, which raised {exc!r} on this call; "
                    f"the fused penalty is used without that check", RuntimeWarning,
                    stacklevel=2)
                handle.verified = True
        value = fused_calc_gradient_penalty(a["self"], a["real_data"], a["fake_data"],
                                            a["device"], a["pac"], a["lambda_"], backend=backend)
        if reference is not None:
            _compare(handle, value, reference)
            handle.verified = True
        return value

    calc_gradient_penalty.__wgangp_fast_patch__ = True
    return calc_gradient_penalty


def _validate_options(backend: str, verify: bool) -> Dict[str, Any]:
    names = ("auto",) + tuple(backends.BACKENDS)
    if not isinstance(backend, str):
        raise TypeError(f"backend must be one of {names}, got {backend!r}")
    if backend not in names:
        raise ValueError(f"backend must be one of {names}, got {backend!r}")
    if not isinstance(verify, bool):
        raise TypeError(f"verify must be a bool, got {verify!r}")
    return {"backend": backend, "verify": verify}


def _patch(cls: type, name: str, options: Dict[str, Any],
           defaults: Dict[str, Any] | None = None) -> Tuple[PatchHandle, bool]:
    """(handle, True) for a new patch, (existing handle, False) when already patched alike."""
    if not isinstance(cls, type):
        raise TypeError(f"cls must be a class, got {type(cls).__name__}")
    if not isinstance(name, str) or not name.isidentifier():
        raise TypeError(f"name must be a method name (a str), got {name!r}")
    with _lock:
        existing = _registry.get((cls, name))
        if existing is not None:
            if existing.options != options:
                raise ValueError(
                    f"{_qualname(cls, name)} is already patched by wgangp_fast with "
                    f"{existing.options}; unpatch it before patching with {options}")
            warnings.warn(f"{_qualname(cls, name)} is already patched by wgangp_fast; "
                          f"patching again does nothing", RuntimeWarning, stacklevel=3)
            return existing, False
        original = vars(cls).get(name, _MISSING)
        try:
            target = inspect.getattr_static(cls, name)
        except AttributeError:
            raise AttributeError(f"{cls.__qualname__} has no method {name!r}") from None
        if getattr(target, "__wgangp_fast_patch__", False):
            raise RuntimeError(f"{cls.__qualname__}.{name} is inherited from a class that "
                               f"wgangp_fast has patched; patch or unpatch that class instead")
        sig = check_signature(target, defaults=defaults, where=f"{cls.__qualname__}.{name}")
        box: list = []
        replacement = _make_replacement(box, target, sig, options["backend"])
        handle = PatchHandle(cls, name, original, options, replacement)
        box.append(handle)
        setattr(cls, name, replacement)
        _registry[(cls, name)] = handle
        return handle, True


def patch_method(cls: type, name: str = "calc_gradient_penalty", *, backend: str = "auto",
                 verify: bool = True) -> PatchHandle:
    """Replace `cls.<name>` (CTGAN signature) by the fused penalty; returns the handle.

    backend: the wgangp_fast backend ("auto" picks by device). verify: check the first call
    against the original method (run on a copy of the RNG state, module buffers restored).
    Already patched with the same options: a RuntimeWarning and the existing handle.
    """
    handle, _ = _patch(cls, name, _validate_options(backend, verify))
    return handle


def unpatch_method(cls: type, name: str = "calc_gradient_penalty") -> bool:
    """Undo `patch_method(cls, name)`. False (with a RuntimeWarning) when it was not patched."""
    with _lock:
        handle = _registry.get((cls, name))
        if handle is None:
            warnings.warn(f"{_qualname(cls, name)} is not patched by wgangp_fast; nothing to "
                          f"undo", RuntimeWarning, stacklevel=2)
            return False
        handle.unpatch()
        return True


def is_patched(cls: type, name: str = "calc_gradient_penalty") -> bool:
    with _lock:
        return (cls, name) in _registry


def get_handle(cls: type, name: str = "calc_gradient_penalty") -> PatchHandle | None:
    with _lock:
        return _registry.get((cls, name))


@contextlib.contextmanager
def patched_method(cls: type, name: str = "calc_gradient_penalty", *, backend: str = "auto",
                   verify: bool = True) -> Iterator[PatchHandle]:
    """`with patched_method(cls):` patches for the block; a patch made before it is left alone."""
    options = _validate_options(backend, verify)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        handle, created = _patch(cls, name, options)
    try:
        yield handle
    finally:
        if created and handle.active:
            handle.unpatch()
