"""Swap a class's gradient-penalty method for the fused one, and back: `patch_method`,
`patched_method`, `unpatch_method`.

    from wgangp_fast.integrations import patch_method
    patch_method(Discriminator)                      # CTGAN's calc_gradient_penalty signature
    patch_method(Trainer, "_gradient_penalty", critic="self.D", lambda_gp="self.gp_weight",
                 eps=1e-12, record=lambda self, n: self.losses["gradient_norm"].append(n.mean().item()))

Without layout options the method must have CTGAN's signature (`ctgan_signature`); with any of
them it may have any signature (`layout`). Bad use is loud: a method with another signature
raises `IncompatibleSignatureError` (a TypeError), a layout that names what the method does not
have raises at patch time; patching an already patched method with the same options warns and
returns the existing handle, with different options raises ValueError. With `verify=True` (the
default) the first call runs the original for real and checks the patch against it
(`first_call`), so a method whose options do not describe it is caught at once.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, Dict, Iterator, Optional

from . import ctgan_signature, layout
from .layout import LAYOUT_OPTIONS, MethodLayout
from .patching import PatchHandle, patch, validate_options

__all__ = ["patch_method", "patched_method"]


def layout_options(backend: str, verify: bool, given: Dict[str, Any]) -> Dict[str, Any]:
    """The patch's options: backend, verify and, when any layout option is given, its layout."""
    options = validate_options(backend, verify)
    given = {k: v for k, v in given.items() if v is not None}
    if not given:
        return options
    if "inputs" in given:
        value = given["inputs"]
        given["inputs"] = (value,) if isinstance(value, str) else tuple(value)
    if "critic_kwargs" in given:
        if not isinstance(given["critic_kwargs"], dict):
            raise TypeError(f"critic_kwargs must be a dict {{keyword: spec}}, got "
                            f"{given['critic_kwargs']!r}")
        given["critic_kwargs"] = tuple(given["critic_kwargs"].items())
    for key in ("returns", "norm_dims"):
        if isinstance(given.get(key), list):
            given[key] = tuple(given[key])
    given.setdefault("lambda_gp", None)
    options["layout"] = MethodLayout(**given)
    return options


def _patch(cls: type, name: str, options: Dict[str, Any]):
    if "layout" in options:
        build = layout.builder(options["layout"], options["backend"])
    else:
        build = ctgan_signature.builder(options["backend"])
    return patch(cls, name, options, build)


def patch_method(cls: type, name: str = "calc_gradient_penalty", *, backend: str = "auto",
                 verify: bool = True, lambda_gp=None, critic=None, real=None, fake=None, inputs=None, critic_kwargs: Optional[dict] = None,
                 pac=None, alpha_per=None, norm_per=None, device=None,
                 alpha_fn: Optional[Callable] = None, eps: Optional[float] = None,
                 norm_dims=None, detach_inputs: Optional[bool] = None, returns=None,
                 record: Optional[Callable] = None) -> PatchHandle:
    """Replace `cls.<name>` by the fused penalty; returns the handle.

    With none of the layout options, the method must have CTGAN's signature
    `(self, real_data, fake_data, device, pac, lambda_)` and formula. With any of them, it may
    have any signature, and the options say what it reads. A spec is a parameter name, an
    attribute path from one ("self.D") or an item of one ("self.discriminators[domain]",
    indexed by a parameter or a literal); "self" is the method's first parameter:

    - lambda_gp (required here): a number or a spec ("self.gp_weight", "lambda_", whose value
      or signature default the call supplies); 1.0 where the caller multiplies.
    - critic: "self" (default), a spec ("self.D", "netD", "self.discriminators[domain]"), an
      nn.Module, or a callable that picks the critic per call: it is called with every argument
      of the method by name (the instance under its own parameter name, defaults applied) and
      returns the critic, e.g. `lambda self, domain, **_: self.discriminators[domain]`.
    - real, fake: specs of the real and fake batch (a tensor, or a list or tuple of tensors for
      a critic of several inputs), or callables of the method's arguments, called as critic=
      is, that build it; default the first two parameters no other option uses.
    - inputs: specs of the critic's other positional inputs (("labels",)); critic_kwargs:
      {keyword: spec} for the critic's keyword inputs.
    - pac: samples per group for both alpha and the norm, a number or spec (default 1).
      alpha_per, norm_per: "sample", "batch" or a number of samples, set apart (one alpha per
      sample with one norm over the batch: alpha_per="sample", norm_per="batch").
    - device: a spec or device of the original's `device=` for alpha, checked to be the data's
      device (the original fails elsewhere).
    - alpha_fn(m, like): how the original draws alpha when not `torch.rand(m)` on the data's
      device. eps: inside the square root (`sqrt(sum(g^2) + 1e-12)`). norm_dims: the norm's
      axes when not every non-batch axis ("all": every axis, one norm over the whole batch).
    - detach_inputs: default True (originals use `.data`); False keeps the generator's graph.
      The first-call check says which one the original matches.
    - returns: "penalty" (default), ("penalty", "norms") in the original's order, or
      callable(penalty, norms) building what the original returns. record: callable(self,
      norms) for the original's bookkeeping (`self.losses["gradient_norm"].append(...)`),
      called with detached per-group norms.

    backend: the wgangp_fast backend ("auto" picks by device). verify: the first call runs the
    original for real (its hooks, buffers, random streams and bookkeeping move once, as
    unpatched), watches its critic call, and checks the fused interpolation (from the same
    random state), the critic's arguments, the penalty of the original's own input gradient and
    what the result is differentiable in; it returns that fused penalty, and `record` is not
    called for it. An original that changed its instance's lists or numbers without a `record`
    warns, since the patched method will not do that again. Already patched with the same
    options: a RuntimeWarning and the existing handle.
    """
    options = layout_options(backend, verify, dict(
        lambda_gp=lambda_gp, critic=critic, real=real, fake=fake, inputs=inputs,
        critic_kwargs=critic_kwargs, pac=pac, alpha_per=alpha_per, norm_per=norm_per,
        device=device, alpha_fn=alpha_fn, eps=eps, norm_dims=norm_dims,
        detach_inputs=detach_inputs, returns=returns, record=record))
    handle, _ = _patch(cls, name, options)
    return handle


@contextlib.contextmanager
def patched_method(cls: type, name: str = "calc_gradient_penalty", *, backend: str = "auto",
                   verify: bool = True, **layout_given) -> Iterator[PatchHandle]:
    """`with patched_method(cls, ...):` patches for the block (the options of `patch_method`);
    a patch made before it is left alone."""
    unknown = sorted(set(layout_given) - set(LAYOUT_OPTIONS))
    if unknown:
        raise TypeError(f"patched_method got unknown options {unknown}; the layout options are "
                        f"{', '.join(LAYOUT_OPTIONS)}")
    options = layout_options(backend, verify, layout_given)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        handle, created = _patch(cls, name, options)
    try:
        yield handle
    finally:
        if created and handle.active:
            handle.unpatch()
