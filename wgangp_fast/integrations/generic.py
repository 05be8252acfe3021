"""Swap a class's gradient-penalty method for the fused one, and back.

Any signature, its layout given by options (see `patch_method` and `MethodLayout`):

    from wgangp_fast.integrations import patch_method
    patch_method(Trainer, "_gradient_penalty", critic="self.D", lambda_gp="self.gp_weight",
                 eps=1e-12, record=lambda self, n: self.losses["gradient_norm"].append(n.mean().item()))

Without layout options, a method qualifies when its parameters are exactly
`(self, real_data, fake_data, device, pac, lambda_)` (positional-or-keyword, defaults free) and it
computes CTGAN's penalty: one alpha per group of `pac` rows drawn as
`torch.rand(N // pac, 1, 1, device=device)`, the critic differentiated at the interpolates, the
norm taken over each group's `pac * D` values, `lambda_ * mean((norm - 1)^2)` returned.

    handle = patch_method(MyDiscriminator)
    ...
    handle.unpatch()

Bad use is loud: a method with another signature raises `IncompatibleSignatureError` (a
TypeError), a layout that names what the method does not have raises at patch time; patching an
already patched method with the same options warns and returns the existing handle, with
different options raises ValueError; unpatching puts back the very object that was there (or
removes the override, when the method was inherited). With `verify=True` (the default) the first
call also runs the original method on a copy of the RNG state and compares the results, so a
method whose signature fits but whose formula does not is caught at once.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import math
import random
import sys
import threading
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor

from .. import _validate as V
from .. import backends
from ..penalty import check_device, gradient_penalty
from .dropin import warn_if_norm_axes_ambiguous

CTGAN_PARAMETERS = ("self", "real_data", "fake_data", "device", "pac", "lambda_")

_VERIFY_RTOL = 1e-3
_VERIFY_ATOL = 1e-5


class IncompatibleSignatureError(TypeError):
    """The method to patch does not have the CTGAN `calc_gradient_penalty` signature."""


def fused_calc_gradient_penalty(discriminator, real_data: Tensor, fake_data: Tensor,
                                device="cpu", pac: int = 10, lambda_: float = 10,
                                *, backend: str = "auto") -> Tensor:
    """CTGAN's penalty on the fused ops, drawing alpha exactly as CTGAN does.

    alpha is `torch.rand(N // pac, 1, 1, device=device)` on the `device` argument (which selects
    the RNG it comes from, so a seeded run stays bit-for-bit on the same random stream) and is then
    moved to where the data lives. The graph of real_data and fake_data is kept, as CTGAN keeps it.
    """
    V.pair(real_data, fake_data)
    m = V.pac(pac, real_data.shape[0], "real_data")
    alpha = torch.rand(m, 1, 1, device=device)
    return gradient_penalty(discriminator, real_data, fake_data, lambda_gp=lambda_, pac=pac,
                            alpha=alpha.to(real_data.device), backend=backend,
                            detach_inputs=False)


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
            f"patching it would risk computing a different penalty than the code it replaces")
    for name, want in (defaults or {}).items():
        got = sig.parameters[name].default
        if got is inspect.Parameter.empty or got != want:
            raise IncompatibleSignatureError(
                f"{where} has signature {sig}: the default of {name!r} is "
                f"{'missing' if got is inspect.Parameter.empty else repr(got)}, expected {want!r}")
    return sig


_MISSING = object()


class PatchHandle:
    """One active swap of `cls.<name>`; `unpatch()` undoes it (once)."""

    def __init__(self, cls: type, name: str, original: Any, options: Dict[str, Any],
                 replacement: Callable):
        self.cls = cls
        self.name = name
        self.original = original
        self.options = dict(options)
        self.replacement = replacement
        # verified: no first-call check is pending (it passed, the original raised so there was
        # nothing to compare with, or verify=False). checked: a call's result matched the
        # original's. The same meaning on the CTGAN-signature and the layout paths.
        self.verified = not options.get("verify", False)
        self.checked = False

    @property
    def active(self) -> bool:
        with _lock:
            return _registry.get((self.cls, self.name)) is self

    @property
    def original_function(self) -> Callable:
        """The function calls went to before the patch (inherited from a base, if not own)."""
        if self.original is not _MISSING:
            return self.original
        for base in self.cls.__mro__[1:]:
            if self.name in vars(base):
                return vars(base)[self.name]
        raise AttributeError(f"{self.cls.__qualname__}.{self.name} is gone from every base class")

    def unpatch(self) -> None:
        """Put back exactly what was there: the same function object, or the inherited one."""
        with _lock:
            if _registry.get((self.cls, self.name)) is not self:
                raise RuntimeError(f"this patch of {_qualname(self.cls, self.name)} is no longer "
                                   f"active (already unpatched)")
            current = vars(self.cls).get(self.name, _MISSING)
            if current is not self.replacement:
                raise RuntimeError(
                    f"{_qualname(self.cls, self.name)} was replaced by {current!r} after "
                    f"wgangp_fast patched it; refusing to overwrite that. Restore the wgangp_fast "
                    f"replacement (handle.replacement) first, then unpatch")
            if self.original is _MISSING:
                delattr(self.cls, self.name)
            else:
                setattr(self.cls, self.name, self.original)
            del _registry[(self.cls, self.name)]

    def __repr__(self) -> str:
        state = "active" if self.active else "inactive"
        return f"<PatchHandle {_qualname(self.cls, self.name)} {self.options} ({state})>"


_lock = threading.RLock()
_registry: Dict[Tuple[type, str], PatchHandle] = {}


def _unchecked(handle, exc: Exception) -> None:
    """The original raised on the first call: warn once and use the fused penalty unchecked."""
    warnings.warn(f"could not check wgangp_fast's penalty against the original "
                  f"{_qualname(handle.cls, handle.name)}, which raised {exc!r} on this call; the "
                  f"fused penalty is used without that check", RuntimeWarning, stacklevel=3)
    handle.verified = True


def _qualname(cls: type, name: str) -> str:
    return f"{cls.__module__}.{cls.__qualname__}.{name}"


def _cuda_indices(*devices) -> List[int]:
    out = []
    for d in devices:
        if d is None:
            continue
        d = torch.device(d)
        if d.type == "cuda":
            out.append(d.index if d.index is not None else torch.cuda.current_device())
    return sorted(set(out))


@contextlib.contextmanager
def _buffers_kept(*modules):
    """Run the block on copies of the modules' buffers (BatchNorm statistics and the like), then
    give each module back the very tensors it had.

    Writing saved values back into the buffers would bump their version counters, and a graph
    the caller built before this call may have saved them (BatchNorm saves its running
    statistics for its backward): that graph's backward would then fail as "modified by an
    inplace operation". Swapping copies in and the originals back leaves the originals unread
    and unwritten by the block.
    """
    swapped = []
    copies: Dict[int, Tensor] = {}
    seen = set()
    for module in modules:
        if not isinstance(module, torch.nn.Module):
            continue
        for sub in module.modules():
            if id(sub) in seen:
                continue
            seen.add(id(sub))
            for name, buffer in sub._buffers.items():
                if buffer is None:
                    continue
                # A buffer registered in two modules stays one tensor, as the original code sees.
                if id(buffer) not in copies:
                    copies[id(buffer)] = buffer.detach().clone().requires_grad_(
                        buffer.requires_grad)
                swapped.append((sub, name, buffer))
    try:
        for sub, name, buffer in swapped:
            sub._buffers[name] = copies[id(buffer)]
        yield
    finally:
        for sub, name, buffer in swapped:
            sub._buffers[name] = buffer


@contextlib.contextmanager
def _rng_forked(*devices):
    """torch's CPU and CUDA generators, and numpy's and Python's global ones where a code may
    draw alpha, all put back afterwards."""
    np = sys.modules.get("numpy")
    np_state = np.random.get_state() if np is not None else None
    py_state = random.getstate()
    try:
        with torch.random.fork_rng(devices=_cuda_indices(*devices)):
            yield
    finally:
        random.setstate(py_state)
        if np_state is not None:
            np.random.set_state(np_state)


def _original_value(original: Callable, args: tuple, kwargs: dict, owner, real,
                    device) -> Tensor:
    """The original method's penalty on a forked RNG state, the caller's state left untouched."""
    with _rng_forked(getattr(real, "device", None), device):
        with _buffers_kept(owner):
            value = original(*args, **kwargs)
    if not isinstance(value, Tensor):
        raise TypeError(f"the original method returned {type(value).__name__}, not a Tensor")
    return value.detach()


def _compare(handle: PatchHandle, fused: Tensor, original: Tensor) -> None:
    f = fused.detach().to(torch.float64).cpu()
    o = original.to(torch.float64).cpu()
    if f.shape != o.shape or not torch.allclose(f, o, rtol=_VERIFY_RTOL, atol=_VERIFY_ATOL):
        raise RuntimeError(
            f"wgangp_fast's penalty ({f.tolist()}) differs from the original "
            f"{_qualname(handle.cls, handle.name)} ({o.tolist()}) for the same RNG state: the "
            f"method has the CTGAN signature but not CTGAN's formula, so patching it would change "
            f"training. Unpatch it (handle.unpatch()) and call wgangp_fast.gradient_penalty with "
            f"the matching options instead")


def _make_replacement(handle_box: list, original: Callable, sig: inspect.Signature,
                      backend: str) -> Callable:
    @functools.wraps(original)
    def calc_gradient_penalty(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        handle = handle_box[0]
        reference = None
        if not handle.verified:
            try:
                reference = _original_value(original, args, kwargs, a["self"], a["real_data"],
                                            a["device"])
            except Exception as exc:  # the unpatched code would fail here too: say so, go on
                _unchecked(handle, exc)
        value = fused_calc_gradient_penalty(a["self"], a["real_data"], a["fake_data"],
                                            a["device"], a["pac"], a["lambda_"], backend=backend)
        if reference is not None:
            _compare(handle, value, reference)
            handle.verified = handle.checked = True
        return value

    calc_gradient_penalty.__wgangp_fast_patch__ = True
    return calc_gradient_penalty


# ---------------------------------------------------------------------------------------------
# Any signature: where the method finds its critic, data, lambda and the rest
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MethodLayout:
    """What a penalty method reads and returns, for `patch_method(cls, name, **layout)`.

    Where a value comes from is a spec: a parameter name ("real_data", "netD"), an attribute path
    from one ("self.D", "self.gp_weight", "opt.lambda_gp"; "self" is the method's first
    parameter whatever its name), or, for critic, lambda_gp, pac and device, the value itself.
    """

    lambda_gp: Any
    critic: Any = "self"
    real: Optional[str] = None
    fake: Optional[str] = None
    inputs: Tuple[Any, ...] = ()
    critic_kwargs: Tuple[Tuple[str, Any], ...] = ()
    pac: Any = 1
    device: Any = None
    alpha_fn: Optional[Callable] = None
    eps: float = 0.0
    norm_dims: Any = None
    detach_inputs: bool = True
    returns: Any = "penalty"
    record: Optional[Callable] = None


_LAYOUT_OPTIONS = tuple(f.name for f in dataclasses.fields(MethodLayout))
_RETURNABLE = ("penalty", "norms")


@dataclasses.dataclass
class _Plan:
    """A MethodLayout compiled against one method's signature: getters from bound arguments."""

    sig: inspect.Signature
    self_name: Optional[str]
    critic: Callable
    real: Callable
    fake: Callable
    real_name: str
    inputs: List[Callable]
    critic_kwargs: List[Tuple[str, Callable]]
    lambda_gp: Callable
    pac: Callable
    device: Optional[Callable]
    returns: Callable
    layout: MethodLayout


def _spec_getter(option: str, spec, params: Dict[str, inspect.Parameter],
                 self_name: Optional[str], where: str, *, constant: bool) -> Callable:
    """bound arguments -> the value `spec` names (or `spec` itself when constant and not a str)."""
    if not isinstance(spec, str):
        if not constant:
            raise TypeError(f"{option} must name a parameter of {where} (a str), got {spec!r}")
        return lambda arguments: spec
    head, *path = spec.split(".")
    if head == "self" and self_name is not None:
        head = self_name
    param = params.get(head)
    if param is None or not all(part.isidentifier() for part in path):
        names = ", ".join(params) or "none"
        raise ValueError(
            f"{option}={spec!r} names neither a parameter of {where} (parameters: {names}) nor "
            f"an attribute path from one, like 'self.{path[0] if path else 'attribute'}'")
    if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
        raise ValueError(f"{option}={spec!r} names the variadic parameter {param} of {where}; "
                         f"name a single parameter")

    def get(arguments):
        value = arguments[head]
        for i, attr in enumerate(path):
            try:
                value = getattr(value, attr)
            except AttributeError:
                reached = ".".join([head] + path[:i])
                raise AttributeError(f"{option}={spec!r}: {reached} ({type(value).__name__}) "
                                     f"has no attribute {attr!r}") from None
        return value

    get.spec_head = head
    return get


def _returns_function(returns) -> Callable:
    if callable(returns):
        return returns
    if isinstance(returns, str):
        returns = (returns,)
    if (isinstance(returns, (tuple, list)) and returns
            and all(isinstance(r, str) and r in _RETURNABLE for r in returns)):
        names = tuple(returns)
        if names == ("penalty",):
            return lambda penalty, norms: penalty
        return lambda penalty, norms: tuple(penalty if r == "penalty" else norms for r in names)
    raise ValueError(f"returns must be 'penalty', a tuple of 'penalty' and 'norms' in the "
                     f"original's order, or a callable(penalty, norms), got {returns!r}")


def _method_function(target, where: str) -> Tuple[Callable, bool]:
    """(the plain function behind the class attribute, whether it is a staticmethod)."""
    if isinstance(target, staticmethod):
        return target.__func__, True
    if inspect.isfunction(target):
        return target, False
    raise IncompatibleSignatureError(
        f"{where} must be a function defined in the class body or a staticmethod, got "
        f"{type(target).__name__}; classmethods and other descriptors cannot be patched")


def _lambda_hint(params) -> str:
    named = [n for n in params if "lambda" in n.lower() or n.lower() in ("gp_weight", "weight")]
    if named:
        return f" (this method has a parameter {named[0]!r}: lambda_gp={named[0]!r} reads it)"
    return ""


def _plan(layout: MethodLayout, func: Callable, is_static: bool, where: str) -> _Plan:
    sig = inspect.signature(func)
    params = dict(sig.parameters)
    self_name = None
    if not is_static:
        first = next(iter(params.values()), None)
        if first is None or first.kind not in (inspect.Parameter.POSITIONAL_ONLY,
                                               inspect.Parameter.POSITIONAL_OR_KEYWORD):
            raise IncompatibleSignatureError(f"{where} has signature {sig}: a method needs a "
                                             f"first positional parameter for the instance")
        self_name = first.name
    if layout.lambda_gp is None:
        raise TypeError(
            f"patch_method({where}, ...) needs lambda_gp: where the original's factor comes "
            f"from (a number, a parameter name, or 'self.<attribute>'; 1.0 when the caller "
            f"multiplies){_lambda_hint(params)}. It has no default because codes use 10, 1 and "
            f"0.1, and a wrong default would silently rescale the penalty")

    def getter(option, spec, constant=True):
        return _spec_getter(option, spec, params, self_name, where, constant=constant)

    critic = getter("critic", layout.critic)
    if not isinstance(layout.critic, str) and not callable(layout.critic):
        raise TypeError(f"critic must be a spec (a str) or a callable, got {layout.critic!r}")
    if not isinstance(layout.lambda_gp, str):
        V.finite("lambda_gp", layout.lambda_gp)
    inputs = [getter(f"inputs[{i}]", spec) for i, spec in enumerate(layout.inputs)]
    critic_kwargs = [(key, getter(f"critic_kwargs[{key!r}]", spec))
                     for key, spec in layout.critic_kwargs]
    lam, pac = getter("lambda_gp", layout.lambda_gp), getter("pac", layout.pac)
    device = None
    if layout.device is not None:
        spec = layout.device
        head = spec.split(".")[0] if isinstance(spec, str) else None
        if head is not None and head not in params and not (head == "self" and self_name):
            try:
                spec = torch.device(spec)
            except (TypeError, RuntimeError):
                raise ValueError(f"device={spec!r} names neither a parameter of {where} nor a "
                                 f"device") from None
        device = getter("device", spec)
    used = {getattr(g, "spec_head", None) for g in [critic, lam, pac, device, *inputs]
            + [g for _, g in critic_kwargs]}
    free = [p.name for p in params.values() if p.name != self_name and p.name not in used
            and p.kind in (inspect.Parameter.POSITIONAL_ONLY,
                           inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    real_spec = layout.real if layout.real is not None else (free[0] if free else None)
    fake_spec = layout.fake if layout.fake is not None else (
        next((n for n in free if n != real_spec), None))
    if real_spec is None or fake_spec is None:
        raise IncompatibleSignatureError(
            f"{where} has signature {sig}: name the parameters holding the real and the fake "
            f"batch (real=..., fake=...); no two are left after the critic, lambda and inputs")
    real = getter("real", real_spec, constant=False)
    fake = getter("fake", fake_spec, constant=False)
    if layout.alpha_fn is not None and not callable(layout.alpha_fn):
        raise TypeError(f"alpha_fn must be callable as alpha_fn(m, like), got "
                        f"{layout.alpha_fn!r}")
    if layout.record is not None and not callable(layout.record):
        raise TypeError(f"record must be callable as record(self, norms), got {layout.record!r}")
    if not isinstance(layout.detach_inputs, bool):
        raise TypeError(f"detach_inputs must be a bool, got {layout.detach_inputs!r}")
    V.finite("eps", layout.eps, minimum=0.0)
    dims = layout.norm_dims
    if not (dims is None or dims == "all" or isinstance(dims, int) or (
            isinstance(dims, tuple) and dims and all(isinstance(d, int) for d in dims))):
        raise TypeError(f"norm_dims must be None, 'all', an axis or a tuple of axes, got "
                        f"{dims!r}")
    return _Plan(sig=sig, self_name=self_name, critic=critic, real=real, fake=fake,
                 real_name=real_spec, inputs=inputs, critic_kwargs=critic_kwargs, lambda_gp=lam,
                 pac=pac, device=device, returns=_returns_function(layout.returns),
                 layout=layout)


def _detached(value):
    if isinstance(value, Tensor):
        return value.detach()
    if isinstance(value, (tuple, list)):
        return type(value)(_detached(v) for v in value)
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    return value


def _differences(got, want, path: str) -> List[str]:
    """Where two results differ beyond float32 rounding, as 'path: got vs original' lines."""
    if isinstance(want, Tensor) or isinstance(got, Tensor):
        if not (isinstance(want, Tensor) and isinstance(got, Tensor)):
            return [f"{path}: {type(got).__name__} vs {type(want).__name__}"]
        g, w = got.detach().to(torch.float64).cpu(), want.to(torch.float64).cpu()
        if g.shape != w.shape:
            return [f"{path}: shape {list(g.shape)} vs {list(w.shape)}"]
        if not torch.allclose(g, w, rtol=_VERIFY_RTOL, atol=_VERIFY_ATOL):
            return [f"{path}: {g.flatten()[:4].tolist()} vs {w.flatten()[:4].tolist()}"]
        return []
    if isinstance(want, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(want):
            return [f"{path}: {type(got).__name__} vs {type(want).__name__} of {len(want)}"]
        return [d for i, (g, w) in enumerate(zip(got, want))
                for d in _differences(g, w, f"{path}[{i}]")]
    if isinstance(want, (int, float)) and isinstance(got, (int, float)):
        if not math.isclose(got, want, rel_tol=_VERIFY_RTOL, abs_tol=_VERIFY_ATOL):
            return [f"{path}: {got} vs {want}"]
        return []
    return [] if got == want else [f"{path}: {got!r} vs {want!r}"]


def _bookkeeping(owner, self_name: Optional[str]) -> Dict[str, Any]:
    """What an original's own logging may change on its instance: the lengths of its list
    attributes and of the lists in its dict attributes (a key added counts), and its numbers."""
    try:
        attributes = vars(owner)
    except TypeError:
        return {}
    seen: Dict[str, Any] = {}
    for name, value in attributes.items():
        where = f"{self_name}.{name}"
        if isinstance(value, list):
            seen[where] = len(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, list):
                    seen[f"{where}[{key!r}]"] = len(item)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            seen[where] = value
    return seen


def _changes(before: Dict[str, Any], after: Dict[str, Any]) -> List[str]:
    out = []
    for where, now in after.items():
        was = before.get(where, _MISSING)
        if was is _MISSING:
            out.append(f"{where} (new)")
        elif was != now:
            out.append(f"{where} ({was} -> {now})")
    return out


def _warn_unrecorded(handle: PatchHandle, changed: List[str]) -> None:
    """The original logged on its instance and no record= does it after the first call: say so
    at once, rather than leave a log that silently stops."""
    warnings.warn(
        f"the original {_qualname(handle.cls, handle.name)} changed {', '.join(changed)} on its "
        f"first call, and the patched method will not do that again (it no longer runs the "
        f"original): pass record=callable(self, norms) to patch_method to keep that "
        f"bookkeeping, e.g. record=lambda self, n: <the list>.append(n.mean().item()), or "
        f"record=lambda self, n: None where it does not matter", RuntimeWarning, stacklevel=3)


def _make_layout_replacement(handle_box: list, func: Callable, plan: _Plan,
                             backend: str) -> Callable:
    layout = plan.layout

    @functools.wraps(func)
    def replacement(*args, **kwargs):
        bound = plan.sig.bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        handle = handle_box[0]
        owner = a[plan.self_name] if plan.self_name else None
        critic, real, fake = plan.critic(a), plan.real(a), plan.fake(a)
        if plan.device is not None:
            V.tensor(plan.real_name, real)
            check_device("device", plan.device(a), real, plan.real_name)
        reference = None
        changed: List[str] = []
        if not handle.verified:
            try:
                before = _bookkeeping(owner, plan.self_name) if owner is not None else {}
                with _rng_forked(getattr(real, "device", None)):
                    with _buffers_kept(critic, owner):
                        reference = _detached(func(*args, **kwargs))
                if owner is not None and layout.record is None:
                    changed = _changes(before, _bookkeeping(owner, plan.self_name))
            except Exception as exc:  # the unpatched code would fail here too: say so, go on
                _unchecked(handle, exc)
        if reference is None and not handle.checked:
            warn_if_norm_axes_ambiguous(real, layout.norm_dims, stacklevel=2)
        penalty, norms = gradient_penalty(
            critic, real, fake, *[g(a) for g in plan.inputs], lambda_gp=plan.lambda_gp(a),
            pac=plan.pac(a), alpha_fn=layout.alpha_fn, eps=layout.eps,
            norm_dims=layout.norm_dims, detach_inputs=layout.detach_inputs,
            critic_kwargs={key: g(a) for key, g in plan.critic_kwargs} or None,
            return_norms=True, backend=backend)
        if layout.record is not None and reference is None:
            layout.record(owner, norms.detach())
        value = plan.returns(penalty, norms)
        if reference is not None:
            differences = _differences(value, reference, "result")
            if differences:
                raise RuntimeError(
                    f"wgangp_fast's result differs from the original "
                    f"{_qualname(handle.cls, handle.name)} for the same RNG state "
                    f"({'; '.join(differences)}; wgangp_fast first): the options given to "
                    f"patch_method do not describe this method. Check lambda_gp, pac, eps, "
                    f"norm_dims, which arguments are real and fake, how alpha is drawn "
                    f"(alpha_fn) and returns; the patch is still active: handle.unpatch()")
            handle.verified = handle.checked = True
            if changed:
                _warn_unrecorded(handle, changed)
        return value

    replacement.__wgangp_fast_patch__ = True
    return replacement


def _layout_options(backend: str, verify: bool, layout: Dict[str, Any]) -> Dict[str, Any]:
    options = _validate_options(backend, verify)
    given = {k: v for k, v in layout.items() if v is not None}
    if not given:
        return options
    for key in ("inputs",):
        if key in given:
            value = given[key]
            given[key] = (value,) if isinstance(value, str) else tuple(value)
    if "critic_kwargs" in given:
        if not isinstance(given["critic_kwargs"], dict):
            raise TypeError(f"critic_kwargs must be a dict {{keyword: spec}}, got "
                            f"{given['critic_kwargs']!r}")
        given["critic_kwargs"] = tuple(given["critic_kwargs"].items())
    if isinstance(given.get("returns"), list):
        given["returns"] = tuple(given["returns"])
    if isinstance(given.get("norm_dims"), list):
        given["norm_dims"] = tuple(given["norm_dims"])
    given.setdefault("lambda_gp", None)
    options["layout"] = MethodLayout(**given)
    return options



def _validate_options(backend: str, verify: bool) -> Dict[str, Any]:
    names = ("auto",) + tuple(backends.BACKENDS)
    if not isinstance(backend, str):
        raise TypeError(f"backend must be one of {names}, got {backend!r}")
    if backend not in names:
        raise ValueError(f"backend must be one of {names}, got {backend!r}")
    if not isinstance(verify, bool):
        raise TypeError(f"verify must be a bool, got {verify!r}")
    return {"backend": backend, "verify": verify}


def _patch(cls: type, name: str, options: Dict[str, Any],
           defaults: Dict[str, Any] | None = None) -> Tuple[PatchHandle, bool]:
    """(handle, True) for a new patch, (existing handle, False) when already patched alike."""
    if not isinstance(cls, type):
        raise TypeError(f"cls must be a class, got {type(cls).__name__}")
    if not isinstance(name, str) or not name.isidentifier():
        raise TypeError(f"name must be a method name (a str), got {name!r}")
    with _lock:
        existing = _registry.get((cls, name))
        if existing is not None:
            if existing.options != options:
                raise ValueError(
                    f"{_qualname(cls, name)} is already patched by wgangp_fast with "
                    f"{existing.options}; unpatch it before patching with {options}")
            warnings.warn(f"{_qualname(cls, name)} is already patched by wgangp_fast; "
                          f"patching again does nothing", RuntimeWarning, stacklevel=3)
            return existing, False
        original = vars(cls).get(name, _MISSING)
        try:
            target = inspect.getattr_static(cls, name)
        except AttributeError:
            raise AttributeError(f"{cls.__qualname__} has no method {name!r}") from None
        if getattr(getattr(target, "__func__", target), "__wgangp_fast_patch__", False):
            raise RuntimeError(f"{cls.__qualname__}.{name} is inherited from a class that "
                               f"wgangp_fast has patched; patch or unpatch that class instead")
        where = f"{cls.__qualname__}.{name}"
        box: list = []
        layout = options.get("layout")
        if layout is None:
            sig = check_signature(target, defaults=defaults, where=where)
            replacement = _make_replacement(box, target, sig, options["backend"])
        else:
            func, is_static = _method_function(target, where)
            plan = _plan(layout, func, is_static, where)
            replacement = _make_layout_replacement(box, func, plan, options["backend"])
            if is_static:
                replacement = staticmethod(replacement)
        handle = PatchHandle(cls, name, original, options, replacement)
        box.append(handle)
        setattr(cls, name, replacement)
        _registry[(cls, name)] = handle
        return handle, True


def patch_method(cls: type, name: str = "calc_gradient_penalty", *, backend: str = "auto",
                 verify: bool = True, lambda_gp=None, critic=None, real: Optional[str] = None,
                 fake: Optional[str] = None, inputs=None, critic_kwargs: Optional[dict] = None,
                 pac=None, device=None, alpha_fn: Optional[Callable] = None,
                 eps: Optional[float] = None, norm_dims=None,
                 detach_inputs: Optional[bool] = None, returns=None,
                 record: Optional[Callable] = None) -> PatchHandle:
    """Replace `cls.<name>` by the fused penalty; returns the handle.

    With none of the layout options, the method must have CTGAN's signature
    `(self, real_data, fake_data, device, pac, lambda_)` (see the module docstring). With any of
    them, it may have any signature, and the options say what it reads (a spec is a parameter
    name or an attribute path from one, "self.D"; see `MethodLayout`):

    - lambda_gp (required here): a number or a spec ("self.gp_weight", "lambda_", whose value
      or signature default the call supplies); 1.0 where the caller multiplies.
    - critic: "self" (default), a spec ("self.D", "netD"), or a callable.
    - real, fake: parameter names; default the first two parameters no other option uses.
    - inputs: specs of the critic's other positional inputs (("labels",)); critic_kwargs:
      {keyword: spec} for the critic's keyword inputs.
    - pac: a number or spec (default 1). device: a spec or device of the original's
      `device=` for alpha, checked to be the data's device (the original fails elsewhere).
    - alpha_fn(m, like): how the original draws alpha when not `torch.rand(N // pac)` on the
      data's device. eps: inside the square root (`sqrt(sum(g^2) + 1e-12)`). norm_dims: the
      norm's axes when not every non-batch axis.
    - detach_inputs: default True (originals use `.data`); False keeps the generator's graph.
    - returns: "penalty" (default), ("penalty", "norms") in the original's order, or
      callable(penalty, norms) building what the original returns. record: callable(self,
      norms) for the original's bookkeeping (`self.losses["gradient_norm"].append(...)`),
      called with detached per-group norms.

    backend: the wgangp_fast backend ("auto" picks by device). verify: run the original on the
    first call too (same RNG state for torch, numpy and random; the modules' buffers swapped for
    copies, so what a graph built before the call saved stays untouched) and compare results.
    The original's side effects of that call stand, so `record` skips it; an original that
    changed its instance's lists or numbers without a `record` warns, since the patched method
    will not do that again. Already patched with the same options: a RuntimeWarning and the
    existing handle.
    """
    options = _layout_options(backend, verify, dict(
        lambda_gp=lambda_gp, critic=critic, real=real, fake=fake, inputs=inputs,
        critic_kwargs=critic_kwargs, pac=pac, device=device, alpha_fn=alpha_fn, eps=eps,
        norm_dims=norm_dims, detach_inputs=detach_inputs, returns=returns, record=record))
    handle, _ = _patch(cls, name, options)
    return handle


def unpatch_method(cls: type, name: str = "calc_gradient_penalty") -> bool:
    """Undo `patch_method(cls, name)`. False (with a RuntimeWarning) when it was not patched."""
    with _lock:
        handle = _registry.get((cls, name))
        if handle is None:
            warnings.warn(f"{_qualname(cls, name)} is not patched by wgangp_fast; nothing to "
                          f"undo", RuntimeWarning, stacklevel=2)
            return False
        handle.unpatch()
        return True


def is_patched(cls: type, name: str = "calc_gradient_penalty") -> bool:
    with _lock:
        return (cls, name) in _registry


def get_handle(cls: type, name: str = "calc_gradient_penalty") -> PatchHandle | None:
    with _lock:
        return _registry.get((cls, name))


@contextlib.contextmanager
def patched_method(cls: type, name: str = "calc_gradient_penalty", *, backend: str = "auto",
                   verify: bool = True, **layout) -> Iterator[PatchHandle]:
    """`with patched_method(cls, ...):` patches for the block (the options of `patch_method`);
    a patch made before it is left alone."""
    unknown = sorted(set(layout) - set(_LAYOUT_OPTIONS))
    if unknown:
        raise TypeError(f"patched_method got unknown options {unknown}; the layout options are "
                        f"{', '.join(_LAYOUT_OPTIONS)}")
    options = _layout_options(backend, verify, layout)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        handle, created = _patch(cls, name, options)
    try:
        yield handle
    finally:
        if created and handle.active:
            handle.unpatch()
