"""Moved to wgangp_fast.train (the trainer split into config, loss, checkpoint, outputs and
trainer modules); this old path gives the same objects, with a one-time warning."""

from ._compat import warn_once as _warn_once
from .train import __all__  # noqa: F401
from .train import checkpoint as _checkpoint
from .train import config as _config
from .train import loss as _loss
from .train import outputs as _outputs
from .train import trainer as _trainer

_warn_once("module wgangp_fast.trainer",
           "wgangp_fast.trainer moved to wgangp_fast.train; import from there "
           "(wgangp_fast.trainer still works and gives the same objects, but will be removed)")

_MODULES = (_trainer, _config, _checkpoint, _loss, _outputs)


def __getattr__(name: str):
    for module in _MODULES:
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module 'wgangp_fast.trainer' has no attribute {name!r}")


def __dir__():
    return sorted({name for module in _MODULES for name in dir(module)
                   if not name.startswith("__")})
