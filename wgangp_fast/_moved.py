"""Old module paths that keep working: each warns once per process, then answers with the module
that now holds its code (the same module object, so the same functions and the same state)."""

from __future__ import annotations

import importlib
import sys
import warnings

_WARNED: set = set()


def _importer_stacklevel(shim: str) -> int:
    """warnings.warn's stacklevel for the first frame outside this module, the shim and importlib:
    the warning then names the line that imported the old path (and Python's default filters
    show it when that is in __main__). warnings.warn skips importlib's frozen frames itself."""
    frame, level = sys._getframe(2), 2  # stacklevel 1 is warn_moved, 2 its caller
    while frame is not None:
        if not frame.f_code.co_filename.startswith("<frozen importlib"):
            if frame.f_globals.get("__name__") not in (shim, __name__, "importlib"):
                return level
            level += 1
        frame = frame.f_back
    return 1


def warn_moved(old: str, new: str, what: str = "") -> None:
    """One DeprecationWarning per process for an import of `old`."""
    if old in _WARNED:
        return
    _WARNED.add(old)
    warnings.warn(f"{old} has moved to {new}{what}; import it from there (the old path will go "
                  "away)", DeprecationWarning, stacklevel=_importer_stacklevel(old))


def alias(old: str, new: str) -> None:
    """Make the module `old` (whose code is running) an alias of module `new`."""
    warn_moved(old, new)
    sys.modules[old] = importlib.import_module(new)
