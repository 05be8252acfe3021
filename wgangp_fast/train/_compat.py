"""What keeps old names working: one-time FutureWarnings, and the modules that moved into
wgangp_fast.train (wgangp_fast.models, .data, .metrics, .distributed) aliased at their old paths."""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from typing import Set

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_WARNED: Set[str] = set()


def warn_once(key: str, message: str) -> None:
    """A FutureWarning (shown by default, unlike DeprecationWarning) the first time `key` is met
    in this process, attributed to the first caller outside wgangp_fast and importlib."""
    if key in _WARNED:
        return
    _WARNED.add(key)
    # warnings.warn skips importlib's frames itself when it counts stacklevel, so only the
    # package's own frames are counted here
    frame, level = sys._getframe(0), 1
    while frame.f_back is not None and (frame.f_code.co_filename.startswith(_PACKAGE)
                                        or _importlib_frame(frame)):
        frame = frame.f_back
        level += not _importlib_frame(frame)
    warnings.warn(message, FutureWarning, stacklevel=level)


def _importlib_frame(frame) -> bool:
    name = frame.f_code.co_filename
    return "importlib" in name and "_bootstrap" in name


def alias_module(old: str, new: str) -> None:
    """Make `import old` give the module `new` itself (same objects, so code and pickles that name
    the old path keep working), with a one-time warning. Called from the old module's body:
    importlib takes whatever sys.modules holds under the name once that body has run."""
    warn_once(f"module {old}", f"{old} moved to {new}; import it from there ({old} still works "
                               f"and gives the same objects, but will be removed)")
    sys.modules[old] = importlib.import_module(new)
