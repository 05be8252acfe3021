"""What keeps old names working: one-time FutureWarnings (shown by default, attributed to the
user's line), and modules that moved, aliased at their old paths (wgangp_fast.models, .data,
.metrics, .distributed -> wgangp_fast.train; .triton_kernels, .backends.eager -> backends/)."""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from typing import Set

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_WARNED: Set[str] = set()


def warn_once(key: str, message: str) -> None:
    """A FutureWarning (shown by default, unlike DeprecationWarning) the first time `key` is met
    in this process, attributed to the first caller outside wgangp_fast and importlib."""
    if key in _WARNED:
        return
    _WARNED.add(key)
    # the frames of the package and of importlib are passed over; warnings.warn counts all but
    # importlib's bootstrap frames in its stacklevel
    frame, level = sys._getframe(0), 1
    while frame.f_back is not None and (frame.f_code.co_filename.startswith(_PACKAGE)
                                        or _importlib_frame(frame)):
        frame = frame.f_back
        level += not _bootstrap_frame(frame)
    warnings.warn(message, FutureWarning, stacklevel=level)


def _bootstrap_frame(frame) -> bool:
    name = frame.f_code.co_filename
    return "importlib" in name and "_bootstrap" in name


def _importlib_frame(frame) -> bool:
    return _bootstrap_frame(frame) or frame.f_globals.get("__name__") == "importlib"


def alias_module(old: str, new: str) -> None:
    """Make `import old` give the module `new` itself (same objects, so code and pickles that name
    the old path keep working), with a one-time warning. Called from the old module's body:
    importlib takes whatever sys.modules holds under the name once that body has run."""
    warn_once(f"module {old}", f"{old} moved to {new}; import it from there ({old} still works "
                               f"and gives the same objects, but will be removed)")
    sys.modules[old] = importlib.import_module(new)
