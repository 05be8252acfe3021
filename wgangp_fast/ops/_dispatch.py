"""Which path an op call takes to its kernels, and what the op files share to offer each path.

Three paths, each for a reason:

- the compiled kernel ops with their C++ autograd (csrc/autograd.cpp): eager calls on cpu and
  cuda; one C++ node per op, and a backward that never enters Python (the lowest host cost).
- the autograd.Function twins of the registered ops: eager calls on triton and reference, and
  every call under torch.compile or a torch.func transform, which the C++ nodes and the
  registered ops' own autograd do not compose with (tests/ops/test_functorch.py).
- the registered torch.library ops (one op for every backend, its name as an argument): what a
  torch.compile graph holds and opcheck tests; WGANGP_FAST_DISPATCHER=1 sends eager calls
  through them too, so that path is tested eagerly as well.
"""

from __future__ import annotations

import functools
import inspect
import os

import torch
from torch import Tensor

from .. import backends

# WGANGP_FAST_DISPATCHER=1 (or wgangp_fast.ops.FORCE_DISPATCHER = True): eager calls take the
# registered ops, so that path runs eagerly too (tests hold it to the same values as the others).
FORCE_DISPATCHER = os.environ.get("WGANGP_FAST_DISPATCHER", "0") == "1"
# WGANGP_FAST_CPP_AUTOGRAD=0 (or wgangp_fast.ops.CPP_AUTOGRAD = False): eager calls on cpu and cuda
# take the twins, what benchmarks/host_overhead.py measures the C++ autograd against.
CPP_AUTOGRAD = os.environ.get("WGANGP_FAST_CPP_AUTOGRAD", "1") != "0"


def _use_dispatcher() -> bool:
    return FORCE_DISPATCHER and not torch.compiler.is_compiling()


def _use_cpp_autograd(backend: str) -> bool:
    return CPP_AUTOGRAD and backend in backends.COMPILED and not FORCE_DISPATCHER


def _functorch_wrapped(args) -> bool:
    """True inside a torch.func transform (grad, vjp, ...): its tensors are functorch wrappers."""
    wrapped = torch._C._functorch.is_functorch_wrapped_tensor
    return any(isinstance(a, Tensor) and wrapped(a) for a in args)


def _run(op, function, *args, ctx=None):
    """Call the registered op, its autograd.Function twin, or on the compiled backends the
    kernel op with its C++ autograd, with the same arguments (the backend name last).

    - torch.compile and torch.func transforms take the twin (a functorch-compatible
      autograd.Function, setup_context style): the registered op's generated autograd and the
      C++ nodes do not compose with torch.func, and compiling torch.func.grad_and_value over
      them fails. Under torch.compile the twin's forward calls the registered op, so the graph
      holds the op and not the backend's Python launcher.
    - A backward (given its ctx) stays on the path its forward took.
    - Where autograd would record nothing (grad mode off, as in a first-order backward, or no
      input requiring grad, as for interpolate on data), the kernel runs without the
      autograd.Function around it: about 10 us less per call.
    """
    if torch.compiler.is_compiling():
        if torch.is_grad_enabled():
            return function.apply(*args)
        return op(*args)
    if _use_dispatcher() or (ctx is not None and not getattr(ctx, "twin", False)):
        return op(*args)
    if _functorch_wrapped(args):
        return function.apply(*args)
    if ctx is None and _use_cpp_autograd(args[-1]):
        return function.kernel(*args)  # the kernel op, which carries its autograd (C++)
    if torch.is_grad_enabled():
        for i in function.tensor_args:
            if args[i] is not None and args[i].requires_grad:
                return function.apply(*args)
    return function.kernel(*args)


def _twin(name, op_name, tensor_args, forward, setup, backward):
    """An autograd.Function whose forward is `forward` (the registered op `op_name` under
    torch.compile) and whose ctx handling and backward are exactly those registered for the
    torch.library op. It uses the separate setup_context form, which torch.func transforms
    require. It carries the op's name, so a graph's grad_fn reads the same on both paths (e.g.
    wgangp_fast_gradient_norm_penaltyBackward). `tensor_args`: the positions of the (optional)
    tensor arguments, for _run's requires_grad check."""

    # the OpOverload (torch.ops.wgangp_fast.<op>.default), which dynamo traces under torch.func
    # transforms too (the CustomOpDef object it cannot wrap there)
    registered = getattr(torch.ops.wgangp_fast, op_name).default

    @functools.wraps(forward)  # torch.compile binds the arguments by the forward's signature
    def fwd(*args):
        return (registered if torch.compiler.is_compiling() else forward)(*args)

    # apply() of a setup_context Function binds its arguments to this signature on every call;
    # computed once here, not by inspect each time (30 us per call of the penalty's ten).
    fwd.__signature__ = inspect.signature(forward)

    def setup_context(ctx, inputs, output):
        setup(ctx, inputs, output)
        ctx.twin = True

    return type(name, (torch.autograd.Function,),
                {"forward": staticmethod(fwd), "setup_context": staticmethod(setup_context),
                 "backward": staticmethod(backward), "kernel": staticmethod(forward),
                 "tensor_args": tensor_args})


def _register_kernel_op(name, fake, setup=None, backward=None, num_inputs=0):
    """The fake implementation of compiled kernel op `name` (for torch.compile and opcheck) and,
    given `backward`, its autograd: the second order of a backward kernel op, whose first order
    is C++ (csrc/autograd.cpp) and calls it through the dispatcher when it builds a graph
    (create_graph=True). `setup` and `backward` are the registered op's own; its backward also
    returns a None for the backend argument, which the kernel op has not (`num_inputs`)."""
    if backends._cpu_extension()[0] is None:
        return
    torch.library.register_fake(f"wgangp_fast::{name}")(fake)
    if backward is not None:
        torch.library.register_autograd(
            f"wgangp_fast::{name}", lambda ctx, *grads: backward(ctx, *grads)[:num_inputs],
            setup_context=setup)
