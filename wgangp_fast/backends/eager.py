"""Moved to wgangp_fast.backends.reference; this path stays an alias of it and warns once."""

from .._compat import alias_module

alias_module(__name__, "wgangp_fast.backends.reference")
