"""Drop the fused penalty into existing training code.

- `wgangp_fast.integrations.ctgan`: `patch()` / `unpatch()` / `patched()` for CTGAN's
  Discriminator (the package itself is imported only when you patch).
- `patch_method(cls)` / `unpatch_method(cls)`: the same for any class whose
  `calc_gradient_penalty(self, real_data, fake_data, device, pac, lambda_)` computes CTGAN's penalty.
- `patch_method(cls, name, lambda_gp=..., critic=..., ...)`: any other penalty method, its
  layout (where the critic, data and lambda are, how alpha and the norm are grouped, what it
  returns or records) given by options.
- `drop_in_penalty(critic, real, fake, *inputs, lambda_gp=..., **critic_kwargs)`: the function
  to call where a code calls its own penalty function (no device argument).

Files: `patching` (the registry and handles), `ctgan_signature` and `layout` (the two patch
strategies), `first_call` (the check of a patched method's first call), `methods` (the public
patch functions), `dropin`, `ctgan`, `functions`. docs/porting.md shows each on real codes.
- `wgangp_fast.integrations.functions`: `compute_gradient_penalty`, `gradient_penalty` and
  `WassersteinGANLoss` with the signatures of common hand-written penalty functions.
"""

from __future__ import annotations

from . import ctgan, dropin, functions
from .ctgan_signature import fused_calc_gradient_penalty
from .dropin import drop_in_penalty
from .layout import MethodLayout
from .methods import patch_method, patched_method
from .patching import (
    IncompatibleSignatureError,
    PatchHandle,
    get_handle,
    is_patched,
    unpatch_method,
)

__all__ = [
    "IncompatibleSignatureError",
    "MethodLayout",
    "PatchHandle",
    "ctgan",
    "drop_in_penalty",
    "dropin",
    "functions",
    "fused_calc_gradient_penalty",
    "get_handle",
    "is_patched",
    "patch_method",
    "patched_method",
    "unpatch_method",
]
