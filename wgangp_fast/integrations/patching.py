"""Swapping a class's method for a replacement, and back: the registry every patch goes through.

Both patch strategies (`ctgan_signature`: CTGAN's exact signature; `layout`: any signature, its
layout given by options) build their replacement and hand it to `patch`, which checks the class
and the method, refuses to stack patches, and records a `PatchHandle` whose `unpatch()` puts back
the very object that was there (or removes the override, when the method was inherited).
"""

from __future__ import annotations

import inspect
import threading
import warnings
from typing import Any, Callable, Dict, Tuple

from .. import backends

__all__ = ["IncompatibleSignatureError", "PatchHandle", "get_handle", "is_patched",
           "unpatch_method"]


class IncompatibleSignatureError(TypeError):
    """The method cannot be patched as asked: its signature or kind does not fit."""


_MISSING = object()


def qualname(cls: type, name: str) -> str:
    return f"{cls.__module__}.{cls.__qualname__}.{name}"


class PatchHandle:
    """One active swap of `cls.<name>`; `unpatch()` undoes it (once)."""

    def __init__(self, cls: type, name: str, original: Any, options: Dict[str, Any],
                 replacement: Callable):
        self.cls = cls
        self.name = name
        self.original = original
        self.options = dict(options)
        self.replacement = replacement
        # verified: no first-call check is pending (it passed, it could not be made, or
        # verify=False). checked: a call's result matched the original's. The same meaning on
        # both strategies.
        self.verified = not options.get("verify", False)
        self.checked = False

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
                raise RuntimeError(f"this patch of {qualname(self.cls, self.name)} is no longer "
                                   f"active (already unpatched)")
            current = vars(self.cls).get(self.name, _MISSING)
            if current is not self.replacement:
                raise RuntimeError(
                    f"{qualname(self.cls, self.name)} was replaced by {current!r} after "
                    f"wgangp_fast patched it; refusing to overwrite that. Restore the wgangp_fast "
                    f"replacement (handle.replacement) first, then unpatch")
            if self.original is _MISSING:
                delattr(self.cls, self.name)
            else:
                setattr(self.cls, self.name, self.original)
            del _registry[(self.cls, self.name)]

    def __repr__(self) -> str:
        state = "active" if self.active else "inactive"
        return f"<PatchHandle {qualname(self.cls, self.name)} {self.options} ({state})>"


_lock = threading.RLock()
_registry: Dict[Tuple[type, str], PatchHandle] = {}


def validate_options(backend: str, verify: bool) -> Dict[str, Any]:
    names = ("auto",) + tuple(backends.BACKENDS)
    if not isinstance(backend, str):
        raise TypeError(f"backend must be one of {names}, got {backend!r}")
    if backend not in names:
        raise ValueError(f"backend must be one of {names}, got {backend!r}")
    if not isinstance(verify, bool):
        raise TypeError(f"verify must be a bool, got {verify!r}")
    return {"backend": backend, "verify": verify}


def patch(cls: type, name: str, options: Dict[str, Any],
          build: Callable[[Any, str, list], Callable]) -> Tuple[PatchHandle, bool]:
    """(handle, True) for a new patch, (existing handle, False) when already patched alike.

    build(target, where, box) makes the replacement for the class attribute `target`; box is a
    list that will hold the handle, for the replacement to read its check state.
    """
    if not isinstance(cls, type):
        raise TypeError(f"cls must be a class, got {type(cls).__name__}")
    if not isinstance(name, str) or not name.isidentifier():
        raise TypeError(f"name must be a method name (a str), got {name!r}")
    with _lock:
        existing = _registry.get((cls, name))
        if existing is not None:
            if existing.options != options:
                raise ValueError(
                    f"{qualname(cls, name)} is already patched by wgangp_fast with "
                    f"{existing.options}; unpatch it before patching with {options}")
            warnings.warn(f"{qualname(cls, name)} is already patched by wgangp_fast; "
                          f"patching again does nothing", RuntimeWarning, stacklevel=3)
            return existing, False
        original = vars(cls).get(name, _MISSING)
        try:
            target = inspect.getattr_static(cls, name)
        except AttributeError:
            raise AttributeError(f"{cls.__qualname__} has no method {name!r}") from None
        if getattr(getattr(target, "__func__", target), "__wgangp_fast_patch__", False):
            raise RuntimeError(f"{cls.__qualname__}.{name} is inherited from a class that "
                               f"wgangp_fast has patched; patch or unpatch that class instead")
        box: list = []
        replacement = build(target, f"{cls.__qualname__}.{name}", box)
        handle = PatchHandle(cls, name, original, options, replacement)
        box.append(handle)
        setattr(cls, name, replacement)
        _registry[(cls, name)] = handle
        return handle, True


def unpatch_method(cls: type, name: str = "calc_gradient_penalty") -> bool:
    """Undo `patch_method(cls, name)`. False (with a RuntimeWarning) when it was not patched."""
    with _lock:
        handle = _registry.get((cls, name))
        if handle is None:
            warnings.warn(f"{qualname(cls, name)} is not patched by wgangp_fast; nothing to "
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
