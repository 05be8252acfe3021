"""Moved to wgangp_fast.backends.triton; this path stays an alias of it and warns once."""

from ._moved import alias

alias(__name__, "wgangp_fast.backends.triton")
