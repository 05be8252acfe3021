"""Moved to wgangp_fast.train.data; this old path gives that module, with a one-time warning."""

from ._compat import alias_module

alias_module(__name__, "wgangp_fast.train.data")
