"""Patching a penalty method of any signature: where it finds its critic, data and lambda, how
it groups alpha and the norm, what it returns and records (`MethodLayout`), compiled against the
method's signature into a `Plan` of getters from its bound arguments.

A spec names a value the method has: a parameter ("real_data", "netD"), an attribute path from
one ("self.D", "opt.lambda_gp"), or an item of one, indexed by a parameter or a literal
("self.discriminators[domain]", "self.nets['a']"). "self" is the method's first parameter,
whatever its name.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from .. import _validate as V
from ..penalty import check_device, penalty_call
from .dropin import warn_if_norm_axes_ambiguous
from .first_call import checked_call
from .patching import IncompatibleSignatureError, PatchHandle, qualname

__all__ = ["LAYOUT_OPTIONS", "MethodLayout", "builder"]


@dataclasses.dataclass(frozen=True)
class MethodLayout:
    """What a penalty method reads and returns, for `patch_method(cls, name, **layout)` (see
    there for each option)."""

    lambda_gp: Any
    critic: Any = "self"
    real: Any = None
    fake: Any = None
    inputs: Tuple[Any, ...] = ()
    critic_kwargs: Tuple[Tuple[str, Any], ...] = ()
    pac: Any = 1
    alpha_per: Any = None
    norm_per: Any = None
    device: Any = None
    alpha_fn: Optional[Callable] = None
    eps: float = 0.0
    norm_dims: Any = None
    detach_inputs: bool = True
    returns: Any = "penalty"
    record: Optional[Callable] = None


LAYOUT_OPTIONS = tuple(f.name for f in dataclasses.fields(MethodLayout))
_RETURNABLE = ("penalty", "norms")


@dataclasses.dataclass
class Plan:
    """A MethodLayout compiled against one method's signature: getters from bound arguments."""

    sig: inspect.Signature
    self_name: Optional[str]
    critic: Callable
    critic_param: Optional[str]
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


# ---------------------------------------------------------------------------------------------
# Specs
# ---------------------------------------------------------------------------------------------


def _forms(params: Dict[str, inspect.Parameter], self_name: Optional[str]) -> str:
    """The spec forms, written with one of this method's parameters."""
    p = self_name or next(iter(params), "x")
    return f"'{p}', '{p}.<attribute>' or '{p}.<attribute>[<parameter or literal>]'"


def _parse(option: str, spec: str, params: Dict[str, inspect.Parameter],
           self_name: Optional[str], where: str) -> Tuple[str, list]:
    """(head parameter, steps): each step ("attr", name) or ("item", ("param" | "literal", x))."""
    names = ", ".join(params) or "none"
    try:
        node = ast.parse(spec.strip(), mode="eval").body
    except SyntaxError:
        node = None
    steps: list = []
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        if isinstance(node, ast.Attribute):
            steps.insert(0, ("attr", node.attr))
        else:
            key = node.slice
            if isinstance(key, ast.Name):
                steps.insert(0, ("item", ("param", key.id)))
            elif isinstance(key, ast.Constant) and isinstance(key.value, (int, str)) \
                    and not isinstance(key.value, bool):
                steps.insert(0, ("item", ("literal", key.value)))
            else:
                node = None
                break
        node = node.value
    if not isinstance(node, ast.Name):
        raise ValueError(f"{option}={spec!r} is not a spec of {where}: a spec is a parameter, "
                         f"an attribute path from one or an item of one ({_forms(params, self_name)}"
                         f"; parameters: {names})")

    def param(name: str) -> str:
        return self_name if name == "self" and self_name is not None else name

    head = param(node.id)
    if head not in params:
        raise ValueError(f"{option}={spec!r} names neither a parameter of {where} (parameters: "
                         f"{names}) nor a path from one ({_forms(params, self_name)})")
    for i, (kind, value) in enumerate(steps):
        if kind == "item" and value[0] == "param":
            if param(value[1]) not in params:
                raise ValueError(f"{option}={spec!r} indexes by {value[1]!r}, which is not a "
                                 f"parameter of {where} (parameters: {names}); an index is a "
                                 f"parameter or a literal such as 0 or 'name'")
            steps[i] = ("item", ("param", param(value[1])))
    for name in {head} | {v[1] for k, v in steps if k == "item" and v[0] == "param"}:
        if params[name].kind in (inspect.Parameter.VAR_POSITIONAL,
                                 inspect.Parameter.VAR_KEYWORD):
            raise ValueError(f"{option}={spec!r} uses the variadic parameter {params[name]} of "
                             f"{where}; name a single parameter")
    return head, steps


def _spec_getter(option: str, spec, params: Dict[str, inspect.Parameter],
                 self_name: Optional[str], where: str, *, constant: bool) -> Callable:
    """bound arguments -> the value `spec` names (or `spec` itself when constant and not a str).
    The getter's `uses` holds the parameters it reads, `bare` the parameter when the spec is
    one and nothing more."""
    if not isinstance(spec, str):
        if not constant:
            raise TypeError(f"{option} must be a spec of {where} (a str) or a callable of its "
                            f"arguments, got {spec!r}")

        def value(arguments):
            return spec
        value.uses, value.bare = set(), None
        return value
    head, steps = _parse(option, spec, params, self_name, where)

    def get(arguments):
        value, reached = arguments[head], head
        for kind, step in steps:
            if kind == "attr":
                try:
                    value = getattr(value, step)
                except AttributeError:
                    raise AttributeError(f"{option}={spec!r}: {reached} ({type(value).__name__}) "
                                         f"has no attribute {step!r}") from None
                reached = f"{reached}.{step}"
                continue
            key = arguments[step[1]] if step[0] == "param" else step[1]
            try:
                value = value[key]
            except (KeyError, IndexError) as exc:
                raise LookupError(f"{option}={spec!r}: {reached} ({type(value).__name__}) has no "
                                  f"item {key!r} ({type(exc).__name__})") from None
            except TypeError:
                raise TypeError(f"{option}={spec!r}: {reached} ({type(value).__name__}) cannot be "
                                f"indexed") from None
            reached = f"{reached}[{key!r}]"
        return value

    get.uses = {head} | {s[1] for k, s in steps if k == "item" and s[0] == "param"}
    get.bare = head if not steps else None
    return get


def _critic_getter(critic, params: Dict[str, inspect.Parameter], self_name: Optional[str],
                   where: str) -> Callable:
    """A spec, a module (the critic itself), or a callable of the method's arguments that
    returns the critic of the call (see `_chooser`)."""
    if isinstance(critic, str):
        return _spec_getter("critic", critic, params, self_name, where, constant=False)
    if isinstance(critic, nn.Module):
        return _spec_getter("critic", critic, params, self_name, where, constant=True)
    if not callable(critic):
        raise TypeError(f"critic must be a spec (a str), an nn.Module, or a callable of the "
                        f"method's arguments that returns the critic, got {critic!r}")
    choose = _chooser("critic", critic, params, self_name, where,
                      "To use a function as the critic itself, return it: "
                      "critic=lambda **_: <the function>")

    def chosen_critic(arguments):
        chosen = choose(arguments)
        if not callable(chosen):
            raise TypeError(f"critic={critic!r} returned {type(chosen).__name__}, not a critic "
                            f"(a module or a callable)")
        return chosen

    chosen_critic.uses, chosen_critic.bare = choose.uses, None
    return chosen_critic


def _chooser(option: str, fn: Callable, params: Dict[str, inspect.Parameter],
             self_name: Optional[str], where: str, advice: str = "") -> Callable:
    """A callable of the method's arguments as a getter: called as fn(**arguments), every
    parameter by name (the instance under its own name, defaults applied); its `uses` are the
    parameters it names. Checked at patch time to take them all."""
    names = ", ".join(params)
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # no signature to read (a builtin): calls will tell
        signature = None
    if signature is not None:
        try:
            signature.bind(**{name: None for name in params})
        except TypeError as exc:
            raise TypeError(
                f"{option}={fn!r} is called with the arguments of {where} by keyword ({names}), "
                f"but it cannot take them ({exc}): give it the parameters it uses and **_ for "
                f"the rest (lambda {self_name or next(iter(params), 'x')}, **_: ...). "
                f"{advice}".rstrip()) from None

    def get(arguments):
        return fn(**arguments)

    get.uses = set(params) if signature is None else {
        p.name for p in signature.parameters.values() if p.name in params
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)}
    get.bare = None
    return get


# ---------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------


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


def _group_option(name: str, value) -> None:
    if value is None or value in ("sample", "batch"):
        return
    if isinstance(value, str):
        raise ValueError(f"{name} must be 'sample', 'batch' or a number of samples per group, "
                         f"got {value!r}")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TypeError(f"{name} must be 'sample', 'batch' or a number of samples per group (a "
                        f"positive int), got {value!r}")


def compile_plan(layout: MethodLayout, func: Callable, is_static: bool, where: str) -> Plan:
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

    critic = _critic_getter(layout.critic, params, self_name, where)
    if not isinstance(layout.lambda_gp, str):
        V.finite("lambda_gp", layout.lambda_gp)
    inputs = [getter(f"inputs[{i}]", spec) for i, spec in enumerate(layout.inputs)]
    critic_kwargs = [(key, getter(f"critic_kwargs[{key!r}]", spec))
                     for key, spec in layout.critic_kwargs]
    lam, pac = getter("lambda_gp", layout.lambda_gp), getter("pac", layout.pac)
    _group_option("alpha_per", layout.alpha_per)
    _group_option("norm_per", layout.norm_per)
    device = None
    if layout.device is not None:
        spec = layout.device
        head = spec.split(".")[0].split("[")[0] if isinstance(spec, str) else None
        if head is not None and head not in params and not (head == "self" and self_name):
            try:
                spec = torch.device(spec)
            except (TypeError, RuntimeError):
                raise ValueError(f"device={spec!r} names neither a parameter of {where} nor a "
                                 f"device") from None
        device = getter("device", spec)
    used = set().union(*(g.uses for g in [critic, lam, pac, *inputs]
                         + ([device] if device is not None else [])
                         + [g for _, g in critic_kwargs]))
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
    real, fake = (
        _chooser(option, spec, params, self_name, where) if callable(spec)
        else getter(option, spec, constant=False)
        for option, spec in (("real", real_spec), ("fake", fake_spec)))
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
    real, fake = _batch_getter("real", real, real_spec, layout.real is None), _batch_getter(
        "fake", fake, fake_spec, layout.fake is None)
    return Plan(sig=sig, self_name=self_name, critic=critic, critic_param=critic.bare,
                real=real, fake=fake, real_name=real_spec if isinstance(real_spec, str) else "real", inputs=inputs,
                critic_kwargs=critic_kwargs, lambda_gp=lam, pac=pac, device=device,
                returns=_returns_function(layout.returns), layout=layout)


def _batch_getter(option: str, get: Callable, spec: str, picked: bool) -> Callable:
    """get, refusing what is no batch with the spec named (and that it was picked, not given)."""

    def batch(arguments):
        value = get(arguments)
        if isinstance(value, (Tensor, list, tuple)):
            return value
        why = (f" (patch_method took the first parameter no other option uses: name the one "
               f"holding the {option} batch, {option}=...)" if picked else "")
        raise TypeError(f"{option}={spec!r} gave a {type(value).__name__}, not a batch (a tensor, "
                        f"or a list or tuple of tensors){why}")

    return batch


# ---------------------------------------------------------------------------------------------
# What the original does to its instance that the patch must do too
# ---------------------------------------------------------------------------------------------


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
        was = before.get(where, _UNSEEN)
        if was is _UNSEEN:
            out.append(f"{where} (new)")
        elif was != now:
            out.append(f"{where} ({was} -> {now})")
    return out


_UNSEEN = object()


def _warn_unrecorded(handle: PatchHandle, changed: List[str]) -> None:
    """The original logged on its instance and no record= does it after the first call: say so
    at once, rather than leave a log that silently stops."""
    warnings.warn(
        f"the original {qualname(handle.cls, handle.name)} changed {', '.join(changed)} on its "
        f"first call, and the patched method will not do that again (it no longer runs the "
        f"original): pass record=callable(self, norms) to patch_method to keep that "
        f"bookkeeping, e.g. record=lambda self, n: <the list>.append(n.mean().item()), or "
        f"record=lambda self, n: None where it does not matter", RuntimeWarning, stacklevel=3)


# ---------------------------------------------------------------------------------------------
# The replacement
# ---------------------------------------------------------------------------------------------

_HINT = ("the options given to patch_method do not describe this method. Check lambda_gp, eps, "
         "norm_dims, norm_per (and pac), and returns; the patch is still active: "
         "handle.unpatch()")


def builder(layout: MethodLayout, backend: str) -> Callable:
    """The replacement maker `patching.patch` takes, for this strategy."""

    def build(target, where: str, box: list):
        func, is_static = _method_function(target, where)
        plan = compile_plan(layout, func, is_static, where)
        replacement = _replacement(box, func, plan, backend)
        return staticmethod(replacement) if is_static else replacement

    return build


def _replacement(box: list, func: Callable, plan: Plan, backend: str) -> Callable:
    layout = plan.layout

    @functools.wraps(func)
    def replacement(*args, **kwargs):
        bound = plan.sig.bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        handle = box[0]
        owner = a[plan.self_name] if plan.self_name else None
        critic, real, fake = plan.critic(a), plan.real(a), plan.fake(a)
        if plan.device is not None:
            first = real[0] if isinstance(real, (list, tuple)) and real else real
            V.tensor(plan.real_name, first)
            check_device("device", plan.device(a), first, plan.real_name)

        def prepare():
            return penalty_call(
                critic, real, fake, *[g(a) for g in plan.inputs], lambda_gp=plan.lambda_gp(a),
                pac=plan.pac(a), alpha_per=layout.alpha_per, norm_per=layout.norm_per,
                alpha_fn=layout.alpha_fn, eps=layout.eps, norm_dims=layout.norm_dims,
                detach_inputs=layout.detach_inputs,
                critic_kwargs={key: g(a) for key, g in plan.critic_kwargs} or None,
                return_norms=True, backend=backend)

        if not handle.verified:
            before = _bookkeeping(owner, plan.self_name) if owner is not None else {}
            ran, value = checked_call(
                handle, func, args, kwargs, critic=critic, prepare=prepare,
                finish=lambda out: plan.returns(*out), real=real, fake=fake,
                keeps_graph=not layout.detach_inputs,
                substitute=_substitute(plan, args, kwargs), devices=_devices(real, a, plan),
                hint=_HINT, detach_advice=lambda detach: f"Pass detach_inputs={detach}.",
                critic_name=_critic_name(layout.critic))
            if ran:
                if owner is not None and layout.record is None:
                    changed = _changes(before, _bookkeeping(owner, plan.self_name))
                    if changed:
                        _warn_unrecorded(handle, changed)
                return value
        if not handle.checked:
            warn_if_norm_axes_ambiguous(real, layout.norm_dims, layout.norm_per, stacklevel=2)
        penalty, norms = prepare().run()
        if layout.record is not None:
            layout.record(owner, norms.detach())
        return plan.returns(penalty, norms)

    replacement.__wgangp_fast_patch__ = True
    return replacement


def _substitute(plan: Plan, args: tuple, kwargs: dict) -> Optional[Callable]:
    """For a critic that is an argument of the method: (args, kwargs) with it replaced."""
    if plan.critic_param is None:
        return None

    def substitute(watched):
        bound = plan.sig.bind(*args, **kwargs)
        bound.arguments[plan.critic_param] = watched
        return bound.args, bound.kwargs

    return substitute


def _devices(real, arguments, plan: Plan) -> tuple:
    parts = real if isinstance(real, (list, tuple)) else [real]
    found = [getattr(t, "device", None) for t in parts]
    if plan.device is not None:
        found.append(plan.device(arguments))
    return tuple(found)


def _critic_name(critic) -> str:
    if isinstance(critic, str):
        return f"critic={critic!r}"
    if isinstance(critic, nn.Module):
        return f"the critic ({type(critic).__name__})"
    return "the critic chosen by critic="
