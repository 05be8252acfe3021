"""Patching a method that has CTGAN's `calc_gradient_penalty` signature, without layout options.

A method qualifies when its parameters are exactly `(self, real_data, fake_data, device, pac,
lambda_)` (positional-or-keyword, defaults free) and it computes CTGAN's penalty: one alpha per
group of `pac` rows drawn as `torch.rand(N // pac, 1, 1, device=device)`, the critic (the
instance itself) differentiated at the interpolates, the norm over each group's `pac * D` values,
`lambda_ * mean((norm - 1)^2)` returned, the graph to real and fake kept. The replacement draws
alpha the same way, so a seeded run consumes the same random numbers.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Dict

import torch
from torch import Tensor

from .. import _validate as V
from ..penalty import PenaltyCall, penalty_call
from .first_call import checked_call
from .patching import IncompatibleSignatureError

__all__ = ["CTGAN_PARAMETERS", "check_signature", "fused_calc_gradient_penalty"]

CTGAN_PARAMETERS = ("self", "real_data", "fake_data", "device", "pac", "lambda_")


def ctgan_penalty_call(discriminator, real_data: Tensor, fake_data: Tensor, device, pac,
                       lambda_, backend: str) -> PenaltyCall:
    """CTGAN's penalty as a fused call, alpha drawn now as CTGAN draws it: `torch.rand(N // pac,
    1, 1, device=device)` on the `device` argument (which selects the RNG it comes from), then
    moved to where the data lives."""
    V.pair(real_data, fake_data)
    m = V.pac(pac, real_data.shape[0], "real_data")
    alpha = torch.rand(m, 1, 1, device=device)
    return penalty_call(discriminator, real_data, fake_data, lambda_gp=lambda_, pac=pac,
                        alpha=alpha.to(real_data.device), backend=backend, detach_inputs=False)


def fused_calc_gradient_penalty(discriminator, real_data: Tensor, fake_data: Tensor,
                                device="cpu", pac: int = 10, lambda_: float = 10,
                                *, backend: str = "auto") -> Tensor:
    """CTGAN's penalty on the fused ops, drawing alpha exactly as CTGAN does (see
    `ctgan_penalty_call`). The graph of real_data and fake_data is kept, as CTGAN keeps it."""
    return ctgan_penalty_call(discriminator, real_data, fake_data, device, pac, lambda_,
                              backend).run()


def check_signature(func: Callable, *, defaults: Dict[str, Any] | None = None,
                    where: str = "the method") -> inspect.Signature:
    """The signature of `func` if it is CTGAN's `calc_gradient_penalty` one, else an error.

    With `defaults` ({parameter: value}), those defaults must match too.
    """
    if not inspect.isfunction(func):
        raise IncompatibleSignatureError(
            f"{where} must be a plain function defined in the class body, got "
            f"{type(func).__name__}; staticmethods, classmethods and other descriptors cannot be "
            f"patched")
    sig = inspect.signature(func)
    params = list(sig.parameters.values())
    names = tuple(p.name for p in params)
    kinds_ok = all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params)
    if names != CTGAN_PARAMETERS or not kinds_ok:
        raise IncompatibleSignatureError(
            f"{where} has signature {sig}, expected the CTGAN calc_gradient_penalty signature "
            f"({', '.join(CTGAN_PARAMETERS)}) with positional-or-keyword parameters; "
            f"patching it would risk computing a different penalty than the code it replaces "
            f"(layout options describe any other signature: lambda_gp=..., critic=...)")
    for name, want in (defaults or {}).items():
        got = sig.parameters[name].default
        if got is inspect.Parameter.empty or got != want:
            raise IncompatibleSignatureError(
                f"{where} has signature {sig}: the default of {name!r} is "
                f"{'missing' if got is inspect.Parameter.empty else repr(got)}, expected {want!r}")
    return sig


def builder(backend: str, defaults: Dict[str, Any] | None = None) -> Callable:
    """The replacement maker `patching.patch` takes, for this strategy."""

    def build(target, where: str, box: list) -> Callable:
        sig = check_signature(target, defaults=defaults, where=where)
        return _replacement(box, target, sig, backend)

    return build


def _detach_advice(box: list) -> Callable[[bool], str]:
    def advice(detach: bool) -> str:
        handle = box[0]
        return (f"This method's own penalty detaches real and fake (.data or .detach()), "
                f"unlike CTGAN's: patch it with layout options, which detach by default: "
                f"patch_method({handle.cls.__qualname__}, {handle.name!r}, lambda_gp='lambda_', "
                f"pac='pac', device='device')")
    return advice


def _replacement(box: list, original: Callable, sig: inspect.Signature,
                 backend: str) -> Callable:
    @functools.wraps(original)
    def calc_gradient_penalty(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        handle = box[0]

        def prepare():
            return ctgan_penalty_call(a["self"], a["real_data"], a["fake_data"], a["device"],
                                      a["pac"], a["lambda_"], backend)

        if not handle.verified:
            ran, value = checked_call(
                handle, original, args, kwargs, critic=a["self"], prepare=prepare,
                finish=lambda out: out, real=a["real_data"], fake=a["fake_data"],
                keeps_graph=True, devices=(getattr(a["real_data"], "device", None),
                                           a["device"]),
                hint="the method has the CTGAN signature but not CTGAN's formula, so patching "
                     "it would change training. Unpatch it (handle.unpatch()) and patch it "
                     "with layout options that describe it (patch_method(cls, name, "
                     "lambda_gp=..., ...); docs/porting.md)",
                detach_advice=_detach_advice(box), critic_name="the instance (self)")
            if ran:
                return value
        return prepare().run()

    calc_gradient_penalty.__wgangp_fast_patch__ = True
    return calc_gradient_penalty
