"""The fused ops, one file each: interpolation.py (interpolate) and penalty.py
(gradient_norm_penalty) hold the torch.library custom op, its fake, its autograd (first and second
order), its autograd.Functions and the public function; _dispatch.py chooses the path a call
takes (an autograd.Function around the backend's kernel, or the registered op).

Layering: kernels (csrc/, backends/triton.py, backends/reference.py) -> the backend table
(backends/__init__.py) -> these ops -> the drop-in API (penalty.py). Each op takes the name of an
already-resolved backend as its last argument, so one registered op serves every backend and
`torch.library.opcheck` can test each.
"""

from __future__ import annotations

import sys
import types

from . import _dispatch
from .interpolation import interpolate
from .penalty import gradient_norm_penalty

__all__ = ["gradient_norm_penalty", "interpolate"]


def _flag(name):
    return property(lambda self: getattr(_dispatch, name),
                    lambda self, value: setattr(_dispatch, name, value))


class _Ops(types.ModuleType):
    # The call-path flag lives in _dispatch, where _run reads it; wgangp_fast.ops.FORCE_DISPATCHER,
    # the documented name, reads and sets it there.
    FORCE_DISPATCHER = _flag("FORCE_DISPATCHER")


sys.modules[__name__].__class__ = _Ops
