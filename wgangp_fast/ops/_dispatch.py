"""Which path an op call takes to its kernels, and what the op files share to offer each path.

Every path runs the same autograd (each op file's setup and backward functions) around the same
backend kernels; they differ in how autograd records the call:

- eager calls: a plain autograd.Function (forward(ctx, ...)) around the backend's kernel, or the
  bare kernel where autograd would record nothing. This is the hot path: one Python node per op,
  whose first-order backward calls the backward kernel directly.
- torch.compile and torch.func transforms: the twin of that Function in the setup_context form,
  which torch.func requires and torch.compile traces (tests/ops/test_functorch.py). The plain
  form is kept for eager calls because apply() binds a setup_context Function's arguments to its
  signature on every call (inspect.Signature.bind: 15-20 us for the penalty's ten arguments).
- the registered torch.library ops (one op for every backend, its name as an argument): what a
  torch.compile graph holds and opcheck tests; WGANGP_FAST_DISPATCHER=1 sends eager calls
  through them too, so that path is tested eagerly as well.

The compiled kernel ops (torch.ops.wgangp_fast.*_kernel) have no autograd of their own in C++ (the
LibTorch stable ABI they are built on has none): ops/ registers it for them in Python, for their
direct callers and opcheck; the paths above call them past it.
"""

from __future__ import annotations

import functools
import inspect
import os

import torch

from .. import backends

# WGANGP_FAST_DISPATCHER=1 (or wgangp_fast.ops.FORCE_DISPATCHER = True): eager calls take the
# registered ops, so that path runs eagerly too (tests hold it to the same values as the others).
FORCE_DISPATCHER = os.environ.get("WGANGP_FAST_DISPATCHER", "0") == "1"

_transforms_active = torch._C._are_functorch_transforms_active
_is_compiling = torch.compiler.is_compiling
_grad_enabled = torch.is_grad_enabled


def _run(op, function, *args, ctx=None):
    """Call the registered op, its autograd.Function (eager) or its twin (torch.compile,
    torch.func), or the bare kernel, with the same arguments (the backend name last).

    - torch.compile and torch.func transforms take the twin (a functorch-compatible
      autograd.Function, setup_context style): the registered op's generated autograd does not
      compose with torch.func (pytorch/pytorch#170834), and compiling torch.func.grad_and_value
      over it fails. Under torch.compile the twin's forward calls the registered op, so the graph
      holds the op and not the backend's Python launcher.
    - A backward (given its ctx) stays on the path its forward took.
    - Where autograd would record nothing (grad mode off, as in a first-order backward, or no
      input requiring grad, as for interpolate on data), the kernel runs without an
      autograd.Function around it.
    """
    if _is_compiling():
        return function.apply(*args) if _grad_enabled() else op(*args)
    if FORCE_DISPATCHER or (ctx is not None and not getattr(ctx, "twin", False)):
        return op(*args)
    if _transforms_active():
        return function.apply(*args)
    if _grad_enabled():
        k = function.tensor_args
        for t in args[:k]:
            if t is not None and t.requires_grad:
                return function.eager.apply(*args[:k], args[k:])
    return function.kernel(*args)


def _twin(name, op_name, tensor_args, forward, setup, backward):
    """The autograd.Functions of registered op `op_name`: forward `forward` (the registered op
    under torch.compile), with the ctx handling and backward registered for the op. The class
    returned is the twin, in the setup_context form torch.func requires; its `eager` attribute is
    the same Function in the plain forward(ctx, ...) form, for eager calls (see the module
    docstring). Both carry the op's name, so a graph's grad_fn reads the same on every path (e.g.
    wgangp_fast_gradient_norm_penaltyBackward). `tensor_args`: how many (optional) tensor
    arguments come first, for _run's requires_grad check."""

    # the OpOverload (torch.ops.wgangp_fast.<op>.default), which dynamo traces under torch.func
    # transforms too (the CustomOpDef object it cannot wrap there)
    registered = getattr(torch.ops.wgangp_fast, op_name).default

    @functools.wraps(forward)  # torch.compile binds the arguments by the forward's signature
    def fwd(*args):
        return (registered if _is_compiling() else forward)(*args)

    # apply() of a setup_context Function binds its arguments to this signature on every call;
    # computed once here, not by inspect each time.
    fwd.__signature__ = inspect.signature(forward)

    def setup_context(ctx, inputs, output):
        setup(ctx, inputs, output)
        ctx.twin = True

    # The eager Function takes the tensors, then the other arguments as one tuple: apply()
    # handles each argument it is given (about 0.15 us each).
    def eager_forward(ctx, *inputs):
        args = inputs[:tensor_args] + inputs[tensor_args]
        output = forward(*args)
        setup(ctx, args, output)
        ctx.twin = True
        return output

    def eager_backward(ctx, *grads):
        return backward(ctx, *grads)[:tensor_args] + (None,)

    eager = type(name, (torch.autograd.Function,),
                 {"forward": staticmethod(eager_forward), "backward": staticmethod(eager_backward)})
    return type(name, (torch.autograd.Function,),
                {"forward": staticmethod(fwd), "setup_context": staticmethod(setup_context),
                 "backward": staticmethod(backward), "kernel": staticmethod(forward),
                 "eager": eager, "tensor_args": tensor_args})


def compiled_backend(t: torch.Tensor) -> str:
    """The compiled backend whose kernel op runs on `t`'s device (the dispatcher's choice)."""
    return "cuda" if t.device.type == "cuda" else "cpu"


def _register_kernel_op(name, fake, setup, backward, num_inputs):
    """The fake implementation of compiled kernel op `name` (for torch.compile and opcheck) and
    its autograd, for its direct callers: `setup` and `backward` are those of the registered op
    it implements, which also take the backend's name as a last argument (the kernel op's device
    names it) and return a gradient for it; `num_inputs` is the kernel op's count."""
    if not backends._cpu_extension().loaded:
        return

    def setup_kernel(ctx, inputs, output):
        setup(ctx, (*inputs, compiled_backend(inputs[0])), output)

    torch.library.register_fake(f"wgangp_fast::{name}")(fake)
    torch.library.register_autograd(
        f"wgangp_fast::{name}", lambda ctx, *grads: backward(ctx, *grads)[:num_inputs],
        setup_context=setup_kernel)
