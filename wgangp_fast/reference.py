"""Moved to wgangp_fast.testing, where the op-contract functions are named autograd_interpolate
and autograd_gradient_norm_penalty. This path keeps the old names (the same functions) and warns
once."""

from ._compat import warn_once

warn_once(f"module {__name__}", f"{__name__} moved to wgangp_fast.testing (interpolate and "
                                f"gradient_norm_penalty are autograd_interpolate and "
                                f"autograd_gradient_norm_penalty there); import it from there "
                                f"({__name__} still works, but will be removed)")

from .testing import autograd_gradient_norm_penalty as gradient_norm_penalty  # noqa: E402
from .testing import autograd_interpolate as interpolate  # noqa: E402
from .testing import (  # noqa: E402
    ctgan_gradient_penalty,
    dragan_penalty,
    lp_penalty,
    per_sample_gradient_penalty,
    r1_penalty,
)

__all__ = ["ctgan_gradient_penalty", "dragan_penalty", "gradient_norm_penalty", "interpolate",
           "lp_penalty", "per_sample_gradient_penalty", "r1_penalty"]
