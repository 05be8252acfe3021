"""The first-call check of a patched penalty method: the original runs for real, watched.

The original runs once, as the unpatched code would run it: its hooks fire once (forward,
backward, Opacus' per-sample gradients), its buffers and random streams move once, its
bookkeeping happens once. While it runs, hooks of wgangp_fast's own watch its call of the critic
(forward hooks on a critic module, or a wrapper around a critic passed in as an argument) and the
tensors of that call: the points the critic gets, the weights its scores are differentiated with,
the input gradient the original takes. They are removed when the original returns.

Then, without calling the critic again:
- the fused interpolation is made from the random state the original started from (replayed on
  a fork; the streams stay where the original left them) and compared with those points;
- the critic's other arguments are compared with the ones the patch would pass;
- the fused penalty is computed from the original's own input gradient and compared with the
  original's result, and so is what each is differentiable in (real, fake, or only the critic's
  parameters), which names the `detach_inputs` that matches.

The call returns the fused penalty of the original's gradient: the value later calls give, on
the graph the original built, so a backward through it meets the hooks the original's would.
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .patching import PatchHandle, qualname

__all__ = ["checked_call", "differences"]

_VERIFY_RTOL = 1e-3
_VERIFY_ATOL = 1e-5


class _Call:
    """One call of the critic seen while the original ran."""

    def __init__(self, args: tuple, kwargs: dict):
        self.args, self.kwargs = args, kwargs
        first = args[0] if args else None
        several = isinstance(first, (list, tuple))
        self.container = (list if isinstance(first, list) else tuple) if several else None
        self.parts = list(first) if several else [first]
        self.grads: List[Optional[Tensor]] = [None] * len(self.parts)
        self.weights: List[Tensor] = []

    @property
    def differentiated(self) -> bool:
        return all(g is not None for g in self.grads)

    def describe(self) -> str:
        return _describe_arguments(len(self.args) - 1, sorted(self.kwargs))


class _Watch:
    """Records the critic's calls and the gradients at their points and scores, through hooks
    that change nothing (each returns None) and are removed by close()."""

    def __init__(self):
        self.calls: List[_Call] = []
        self._handles: list = []

    def _enter(self, args, kwargs) -> _Call:
        call = _Call(args, dict(kwargs))
        for i, t in enumerate(call.parts):
            if isinstance(t, Tensor) and t.requires_grad:
                self._handles.append(t.register_hook(self._keep(call.grads, i)))
        self.calls.append(call)
        return call

    def _leave(self, call: _Call, out) -> None:
        scores = out[0] if isinstance(out, (tuple, list)) and len(out) > 0 else out
        if isinstance(scores, Tensor) and scores.requires_grad:
            self._handles.append(scores.register_hook(call.weights.append))

    @staticmethod
    def _keep(grads: list, i: int) -> Callable:
        def hook(grad):
            if grads[i] is None:
                grads[i] = grad
        return hook

    def module(self, critic: nn.Module) -> None:
        pending: List[_Call] = []

        def before(module, args, kwargs):
            pending.append(self._enter(args, kwargs))

        def after(module, args, kwargs, out):
            self._leave(pending.pop(), out)

        # first among the pre-hooks: the arguments as the caller passed them; last among the
        # forward hooks: the output as the caller gets it
        self._handles.append(critic.register_forward_pre_hook(before, with_kwargs=True,
                                                              prepend=True))
        self._handles.append(critic.register_forward_hook(after, with_kwargs=True))

    def wrap(self, critic: Callable) -> Callable:
        def watched(*args, **kwargs):
            call = self._enter(args, kwargs)
            out = critic(*args, **kwargs)
            self._leave(call, out)
            return out
        return watched

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def _describe_arguments(positional: int, keywords: Sequence[str]) -> str:
    words = ["the points"]
    if positional:
        words.append(f"{positional} more positional argument{'s' if positional > 1 else ''}")
    if keywords:
        words.append(f"keywords {', '.join(keywords)}")
    return ", ".join(words)


# ---------------------------------------------------------------------------------------------
# Random streams: the state the original started from, replayed on a fork
# ---------------------------------------------------------------------------------------------


def _cuda_indices(devices) -> List[int]:
    out = []
    for d in devices:
        try:
            d = torch.device(d)
        except (TypeError, RuntimeError):  # not a device: the original meets that itself
            continue
        if d.type == "cuda":
            out.append(d.index if d.index is not None else torch.cuda.current_device())
    return sorted(set(out))


def _rng_state(devices) -> Dict[str, Any]:
    np = sys.modules.get("numpy")
    cuda = _cuda_indices(devices)
    return {"cpu": torch.get_rng_state(),
            "cuda": {i: torch.cuda.get_rng_state(i) for i in cuda},
            "numpy": np.random.get_state() if np is not None else None,
            "python": random.getstate()}


@contextlib.contextmanager
def _replayed(state: Dict[str, Any]):
    """The block draws from `state` (torch's CPU and CUDA generators, numpy's and Python's
    global ones); afterwards every stream is where it was before the block."""
    np = sys.modules.get("numpy")
    np_now = np.random.get_state() if np is not None else None
    py_now = random.getstate()
    try:
        with torch.random.fork_rng(devices=list(state["cuda"])):
            torch.set_rng_state(state["cpu"])
            for i, s in state["cuda"].items():
                torch.cuda.set_rng_state(s, i)
            if np_now is not None and state["numpy"] is not None:
                np.random.set_state(state["numpy"])
            random.setstate(state["python"])
            yield
    finally:
        random.setstate(py_now)
        if np_now is not None:
            np.random.set_state(np_now)


# ---------------------------------------------------------------------------------------------
# Comparisons
# ---------------------------------------------------------------------------------------------


def differences(got, want, path: str) -> List[str]:
    """Where two results differ beyond float32 rounding, as 'path: got vs original' lines."""
    if isinstance(want, Tensor) or isinstance(got, Tensor):
        if not (isinstance(want, Tensor) and isinstance(got, Tensor)):
            return [f"{path}: {type(got).__name__} vs {type(want).__name__}"]
        g, w = got.detach().to(torch.float64).cpu(), want.detach().to(torch.float64).cpu()
        if g.shape != w.shape:
            return [f"{path}: shape {list(g.shape)} vs {list(w.shape)}"]
        if not torch.allclose(g, w, rtol=_VERIFY_RTOL, atol=_VERIFY_ATOL):
            return [f"{path}: {g.flatten()[:4].tolist()} vs {w.flatten()[:4].tolist()}"]
        return []
    if isinstance(want, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(want):
            return [f"{path}: {type(got).__name__} vs {type(want).__name__} of {len(want)}"]
        return [d for i, (g, w) in enumerate(zip(got, want))
                for d in differences(g, w, f"{path}[{i}]")]
    if isinstance(want, (int, float)) and isinstance(got, (int, float)):
        if not math.isclose(got, want, rel_tol=_VERIFY_RTOL, abs_tol=_VERIFY_ATOL):
            return [f"{path}: {got} vs {want}"]
        return []
    return [] if got == want else [f"{path}: {got!r} vs {want!r}"]


def _same_argument(a, b) -> bool:
    if a is b:
        return True
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return (isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape
                and a.device == b.device and bool(torch.equal(a, b)))
    try:
        return bool(a == b)
    except Exception:  # an == that does not answer with a truth value: not the same
        return False


def _tensors(value) -> List[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def _differentiable_in(result, sources: Dict[str, List[Tensor]]) -> set:
    """Which of the named inputs the result's graph reaches (a walk over its autograd nodes:
    nothing runs, no hook fires)."""
    targets = {}
    for name, tensors in sources.items():
        for t in tensors:
            if t.requires_grad:
                node = t.grad_fn if t.grad_fn is not None else \
                    torch.autograd.graph.get_gradient_edge(t).node
                targets[node] = name
    found, seen = set(), set()
    stack = [t.grad_fn for t in _tensors(result) if t.grad_fn is not None]
    while stack and len(found) < len(set(targets.values())):
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node in targets:
            found.add(targets[node])
        stack.extend(f for f, _ in node.next_functions)
    return found


def _in_words(names: set) -> str:
    if not names:
        return "neither real nor fake (only the critic's parameters)"
    return " and ".join(n for n in ("real", "fake") if n in names)


# ---------------------------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------------------------


def checked_call(handle: PatchHandle, original: Callable, args: tuple, kwargs: dict, *,
                 critic, prepare: Callable, finish: Callable, real, fake,
                 keeps_graph: bool, substitute: Optional[Callable] = None,
                 devices: Sequence = (), hint: str, detach_advice: Callable[[bool], str],
                 critic_name: str = "the critic") -> Tuple[bool, Any]:
    """Run the original for real and check the patch against it (see the module docstring).

    prepare() -> PenaltyCall: the fused call the patch makes (drawing what it draws);
    finish(call.penalty(...)) -> what the method returns. substitute(watched) -> (args, kwargs)
    calls the original with a watched critic, where the critic is an argument and no module.
    Returns (True, the result) once the original ran, (False, None) when it raised (a warning
    says so; the caller computes the fused penalty unchecked).
    """
    where = qualname(handle.cls, handle.name)
    watch = _Watch()
    if isinstance(critic, nn.Module):
        watch.module(critic)
    elif substitute is not None:
        args, kwargs = substitute(watch.wrap(critic))
    state = _rng_state(list(devices))
    try:
        result = original(*args, **kwargs)
    except Exception as exc:  # the unpatched code would fail here too: say so, go on
        warnings.warn(f"could not check wgangp_fast's penalty against the original {where}, "
                      f"which raised {exc!r} on this call; the fused penalty is used without "
                      f"that check", RuntimeWarning, stacklevel=3)
        handle.verified = True
        return False, None
    finally:
        watch.close()
    if not isinstance(critic, nn.Module) and substitute is None:
        return True, _unchecked(handle, f"{critic_name} is a {type(critic).__name__}, not an "
                                f"nn.Module, and not an argument of the method, so its call "
                                f"cannot be watched", result)
    done = [c for c in watch.calls if c.differentiated]
    if not done:
        raise RuntimeError(
            f"wgangp_fast's check of {where}: the original never took the gradient of "
            f"{critic_name}'s output with respect to its input (it called it "
            f"{len(watch.calls)} time{'s' if len(watch.calls) != 1 else ''}), so the patch "
            f"would penalise another critic than the original does: check critic=")
    if len(done) > 1:
        return True, _unchecked(handle, f"the original differentiated {critic_name} "
                                f"{len(done)} times", result)
    call = done[0]
    with _replayed(state):
        penalty_call = prepare()
        points = penalty_call.points()
    _check_points(where, call, points, critic_name)
    _check_arguments(where, call, penalty_call, critic_name)
    _check_weights(where, call, critic_name)
    grads = call.grads[0] if call.container is None else tuple(call.grads)
    value = finish(penalty_call.penalty(grads))
    found = differences(value, result, "result")
    if found:
        raise RuntimeError(
            f"wgangp_fast's result differs from the original {where} for the same RNG state, "
            f"the same points and the same input gradient ({'; '.join(found)}; wgangp_fast "
            f"first): {hint}")
    _check_graph(where, result, real, fake, keeps_graph, detach_advice)
    handle.verified = handle.checked = True
    return True, value


def _unchecked(handle: PatchHandle, reason: str, result):
    """The original ran but its call could not be compared: warn once, return its result."""
    warnings.warn(f"could not check wgangp_fast's penalty against the original "
                  f"{qualname(handle.cls, handle.name)}: {reason}. This call returns the "
                  f"original's result and later calls the fused penalty unchecked (verify=False "
                  f"skips the check)", RuntimeWarning, stacklevel=4)
    handle.verified = True
    return result


def _check_points(where: str, call: _Call, points, critic_name: str) -> None:
    several = isinstance(points, (list, tuple))
    mine = list(points) if several else [points]
    if (call.container is None) == several or len(mine) != len(call.parts):
        theirs = "a tensor" if call.container is None else \
            f"a {call.container.__name__} of {len(call.parts)} tensors"
        ours = f"a {type(points).__name__} of {len(mine)} tensors" if several else "a tensor"
        raise RuntimeError(
            f"wgangp_fast's check of {where}: the original passed {theirs} to {critic_name}, "
            f"the patch would pass {ours} (real and fake as given): check real= and fake= "
            f"(a critic of several inputs takes them as lists or tuples of the same tensors)")
    for i, (a, b) in enumerate(zip(mine, call.parts)):
        found = differences(a, b, f"points[{i}]" if several else "points")
        if found:
            raise RuntimeError(
                f"wgangp_fast's check of {where}: the points the original passed to "
                f"{critic_name} differ from wgangp_fast's interpolation of real and fake from "
                f"the same random state ({'; '.join(found)}; wgangp_fast first). Check which "
                f"arguments are real and fake (real is the one alpha multiplies), how alpha is "
                f"drawn (alpha_fn) and how many samples share one (pac, alpha_per)")


def _check_arguments(where: str, call: _Call, penalty_call, critic_name: str) -> None:
    inputs, keywords = tuple(penalty_call.inputs), dict(penalty_call.critic_kwargs)
    given = call.args[1:]
    same = (len(given) == len(inputs) and all(map(_same_argument, given, inputs))
            and set(call.kwargs) == set(keywords)
            and all(_same_argument(call.kwargs[k], keywords[k]) for k in keywords))
    if not same:
        raise RuntimeError(
            f"wgangp_fast's check of {where}: the original called {critic_name} with "
            f"{call.describe()}, the patch would call it with "
            f"{_describe_arguments(len(inputs), sorted(keywords))}, or with other values: check "
            f"inputs= and critic_kwargs=")


def _check_weights(where: str, call: _Call, critic_name: str) -> None:
    if not call.weights:
        raise RuntimeError(
            f"wgangp_fast's check of {where}: the original differentiated another output of "
            f"{critic_name} than its scores (what it returns, or the first element of a tuple "
            f"it returns), which the fused penalty differentiates")
    w = sum(call.weights[1:], call.weights[0])
    if not bool((w == 1).all()):
        raise RuntimeError(
            f"wgangp_fast's check of {where}: the original differentiates {critic_name}'s scores "
            f"weighted by {w.detach().flatten()[:4].tolist()} (its grad_outputs, or a mean of "
            f"the scores), the fused penalty by ones (the gradient of their sum, as "
            f"grad_outputs=torch.ones_like(scores) gives): the gradients, and so the penalties, "
            f"differ")


def _check_graph(where: str, result, real, fake, keeps_graph: bool,
                 detach_advice: Callable[[bool], str]) -> None:
    sources = {"real": [t for t in _tensors(real) if t.requires_grad],
               "fake": [t for t in _tensors(fake) if t.requires_grad]}
    possible = {name for name, ts in sources.items() if ts}
    theirs = _differentiable_in(result, sources)
    mine = possible if keeps_graph else set()
    if theirs == mine:
        return
    if not theirs:
        advice = detach_advice(True)
    elif theirs == possible:
        advice = detach_advice(False)
    else:
        kept = _in_words(theirs)
        cut = _in_words(possible - theirs)
        advice = (f"no detach_inputs matches: the original keeps the graph of {kept} but not "
                  f"of {cut}; detach {cut} where the method is called, or call "
                  f"wgangp_fast.gradient_penalty there with detach_inputs=False")
    raise RuntimeError(
        f"wgangp_fast's check of {where}: the original's penalty is differentiable in "
        f"{_in_words(theirs)}, the patched one would be differentiable in {_in_words(mine)}, "
        f"so training would change where the penalty's gradient reaches (the generator, for "
        f"fake). {advice}")
