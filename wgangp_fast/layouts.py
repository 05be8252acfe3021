"""The layouts of the penalty code being replaced, as the fused ops take them.

- Several inputs: a critic of a list or tuple of tensors, each interpolated with the same alpha,
  one norm over all of them (`Batch`).
- Groups: the samples that share one alpha and the samples that share one norm, chosen apart
  (`alpha_per`, `norm_per`: "sample", "batch" or a number of samples); `pac` sets both, as
  CTGAN's PacGAN grouping has it (`Groups`, `penalty_groups`).
- Norm axes: `norm_dims`, the axes a code's `grads.norm(2, dim=...)` runs over; "all" is every
  axis, the batch included, as `grads.norm(2)` without dim takes it (`norm_layout`).
- alpha in any per-sample layout, or drawn by the code's own `alpha_fn` (`per_group_alpha`).
- The `device` argument of a code that draws alpha on it (`check_device`).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from . import _validate as V

NormDims = Union[None, str, int, Sequence[int]]


class Batch(NamedTuple):
    """real or fake as the critic takes it: one tensor (container None), or the tensors of a
    list or tuple, one batch size, handed to the critic in a container of the same kind."""

    parts: Tuple[Tensor, ...]
    container: Optional[type]

    @property
    def first(self) -> Tensor:
        return self.parts[0]

    def pack(self, parts):
        """parts in the layout the critic takes: the tensor itself, or a list or tuple."""
        return parts[0] if self.container is None else self.container(parts)


def as_batch(name: str, value) -> Batch:
    """A tensor, or a non-empty list or tuple of tensors of one batch size on one device."""
    if isinstance(value, Tensor):
        return Batch((V.tensor(name, value),), None)
    if not isinstance(value, (list, tuple)) or not value:
        raise TypeError(f"{name} must be a torch.Tensor, or a non-empty list or tuple of tensors "
                        f"for a critic of several inputs, got "
                        f"{'an empty ' if isinstance(value, (list, tuple)) else ''}"
                        f"{type(value).__name__}")
    parts = tuple(V.tensor(f"{name}[{i}]", t) for i, t in enumerate(value))
    n, device = parts[0].shape[0], parts[0].device
    for i, t in enumerate(parts[1:], 1):
        if t.shape[0] != n:
            raise ValueError(f"the tensors of {name} must share one batch size, got "
                             f"{name}[0] with N={n} and {name}[{i}] with N={t.shape[0]}")
        if t.device != device:
            raise ValueError(f"the tensors of {name} must be on one device (alpha is drawn "
                             f"there), got {name}[0] on {device} and {name}[{i}] on {t.device}")
    return Batch(parts, list if isinstance(value, list) else tuple)


def batch_pair(real, fake) -> Tuple[Batch, Batch]:
    """real and fake as Batches of the same layout: as many tensors, each pair alike."""
    r, f = as_batch("real", real), as_batch("fake", fake)
    if (r.container is None) != (f.container is None) or len(r.parts) != len(f.parts):
        raise ValueError(f"real and fake must have the same layout, got real as "
                         f"{_describe(r)} and fake as {_describe(f)}")
    for i, (a, b) in enumerate(zip(r.parts, f.parts)):
        at = "" if r.container is None else f"[{i}]"
        if a.shape != b.shape:
            raise ValueError(f"real{at} and fake{at} must have the same shape, got "
                             f"{list(a.shape)} and {list(b.shape)}")
        if a.dtype != b.dtype:
            raise TypeError(f"real{at} and fake{at} must have the same dtype, got {a.dtype} and "
                            f"{b.dtype}")
        if a.device != b.device:
            raise ValueError(f"real{at} and fake{at} must be on the same device, got {a.device} "
                             f"and {b.device}")
    return r, f


def _describe(b: Batch) -> str:
    if b.container is None:
        return "a tensor"
    return f"a {b.container.__name__} of {len(b.parts)} tensors"


# ---------------------------------------------------------------------------------------------
# Groups: who shares an alpha, who shares a norm, over which axes
# ---------------------------------------------------------------------------------------------


class Groups(NamedTuple):
    """alpha_per: samples per alpha (the interpolate op's pac). norm_per: samples per norm (the
    norm op's pac). axes: norm_layout's result for a norm over some axes only, else None."""

    alpha_per: int
    norm_per: int
    axes: Optional[Tuple[list, list, int]]


def penalty_groups(batch: Batch, *, pac=1, alpha_per=None, norm_per=None,
                   norm_dims: NormDims = None) -> Groups:
    """The groups of a penalty call, checked against the batch.

    pac sets both group sizes (PacGAN); alpha_per and norm_per set them apart and go without
    pac. norm_dims "all" (or every axis, the batch's included) is one norm over the whole batch,
    as norm_per="batch" is.
    """
    first = batch.first
    n = first.shape[0]
    pac_size = n // V.pac(pac, n)
    if pac_size != 1 and (alpha_per is not None or norm_per is not None):
        raise ValueError(f"pass pac (one group size for alpha and the norm) or alpha_per and "
                         f"norm_per, not both: got pac={pac} with alpha_per={alpha_per!r} and "
                         f"norm_per={norm_per!r}")
    a = pac_size if alpha_per is None else V.group_size("alpha_per", alpha_per, n)
    b = pac_size if norm_per is None else V.group_size("norm_per", norm_per, n)
    axes = None
    if whole_batch_norm(norm_dims, first.dim()):
        if (norm_per is not None or pac_size != 1) and b != n:
            raise ValueError(f"norm_dims={norm_dims!r} takes one norm over the whole batch "
                             f"(N={n}), which contradicts "
                             f"{'norm_per' if norm_per is not None else 'pac'}={b}: give one "
                             f"of them")
        b = n
    elif norm_dims is not None:
        if batch.container is not None:
            raise ValueError(f"norm_dims={norm_dims!r} names axes of one tensor; with several "
                             f"inputs the norm runs over all of them: norm_dims must be None (a "
                             f"norm per group of norm_per samples) or 'all' (one norm over the "
                             f"whole batch)")
        axes = norm_layout(norm_dims, first.shape, b,
                           "norm_per" if norm_per is not None else "pac")
    return Groups(a, b, axes)


def whole_batch_norm(norm_dims: NormDims, rank: int) -> bool:
    """Whether norm_dims takes one norm over every axis, the batch's included: "all", or a
    sequence (or, for 1-D data, the axis) naming every axis."""
    if isinstance(norm_dims, str):
        return norm_dims == "all"
    if isinstance(norm_dims, bool) or norm_dims is None:
        return False
    dims = [norm_dims] if isinstance(norm_dims, int) else norm_dims
    try:
        axes = {d % rank for d in dims if isinstance(d, int) and not isinstance(d, bool)
                and -rank <= d < rank}
    except TypeError:
        return False
    return len(axes) == len(list(dims)) == rank


def norm_layout(norm_dims: NormDims, shape, pac: int = 1,
                group_name: str = "pac") -> Optional[Tuple[list, list, int]]:
    """None when the norm runs over every non-batch axis (the ops' own layout), else
    (permutation that puts the norm axes last, shape of the per-norm results, norm length).

    The batch axis 0 belongs only to a norm over every axis (`whole_batch_norm`), which
    penalty_groups turns into one norm group of the whole batch before this is asked.
    """
    rank = len(shape)
    if norm_dims is None:
        return None
    if isinstance(norm_dims, str):
        raise ValueError(f"norm_dims must be None, 'all' (every axis, the batch included), an "
                         f"axis or a sequence of axes, got {norm_dims!r}")
    dims = [norm_dims] if isinstance(norm_dims, int) else norm_dims
    try:
        dims = list(dims)
    except TypeError:
        raise TypeError(f"norm_dims must be None, 'all', an axis or a sequence of axes, got "
                        f"{type(norm_dims).__name__}") from None
    if not dims:
        raise ValueError("norm_dims must name at least one axis (None: every non-batch axis of "
                         "each sample)")
    axes = []
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int):
            raise TypeError(f"norm_dims must hold ints (axes of real), got {d!r}")
        if not -rank <= d < rank:
            raise ValueError(f"norm_dims holds axis {d}, out of range for real of shape "
                             f"{list(shape)} ({rank} axes)")
        d %= rank
        if d in axes:
            raise ValueError(f"norm_dims names axis {d} twice ({norm_dims!r})")
        axes.append(d)
    if 0 in axes:
        every = tuple(range(rank))
        raise ValueError(
            f"norm_dims={norm_dims!r} holds the batch axis 0 but not every axis: a norm across "
            f"samples runs over every axis of its samples. norm_dims='all' (or {every}) takes "
            f"one norm over the whole batch; norm_per=k one norm per k samples")
    if sorted(axes) == list(range(1, rank)):
        return None
    if pac != 1:
        raise ValueError(f"norm_dims={norm_dims!r} (a norm over some axes of each sample) cannot "
                         f"be combined with {group_name}={pac}, whose norm runs over whole "
                         f"groups of samples")
    kept = [d for d in range(1, rank) if d not in axes]
    return [0] + kept + axes, [shape[0]] + [shape[d] for d in kept], math.prod(
        shape[d] for d in axes)


# ---------------------------------------------------------------------------------------------
# alpha as the replaced code lays it out or draws it
# ---------------------------------------------------------------------------------------------


def per_group_alpha(alpha: Optional[Tensor], real: Tensor, pac: int = 1, *,
                    alpha_fn: Optional[Callable] = None, group_name: str = "pac") -> Tensor:
    """The M = N / pac per-group values of alpha as the fused interpolate takes them.

    alpha may already hold M values (any shape that flattens to M), or lay them out over the
    batch as the replaced code broadcasts it: leading axis N, every other axis 1 or real's size
    there ([N], [N, 1], [N, 1, 1, 1], [N, 1, H, W], real's full shape, expanded or materialised).
    Then every value of a group (its pac samples, all their positions) must be equal; the check
    reads only the axes that are not expanded views, and costs one host synchronisation on a GPU
    (M values skip it). alpha_fn(m, like=real) draws alpha instead; its result is read the same
    way. group_name is the option that set the group size, for the messages.
    """
    m = V.pac(pac, real.shape[0])
    if alpha_fn is not None:
        if alpha is not None:
            raise ValueError("pass alpha or alpha_fn, not both")
        if not callable(alpha_fn):
            raise TypeError(f"alpha_fn must be callable as alpha_fn(m, like), got "
                            f"{type(alpha_fn).__name__}")
        alpha = alpha_fn(m, real)
        where = "the tensor alpha_fn returned"
    else:
        where = "alpha"
    if not isinstance(alpha, Tensor):
        raise TypeError(f"{where} must be a torch.Tensor of {m} values (one per group of "
                        f"{group_name}={pac} samples), got {type(alpha).__name__}")
    if alpha.numel() == m:
        return alpha.reshape(m)
    n, shape = real.shape[0], list(real.shape)
    fits = (0 < alpha.dim() <= real.dim() and alpha.shape[0] == n
            and all(a in (1, r) for a, r in zip(alpha.shape[1:], shape[1:])))
    if not fits:
        raise ValueError(
            f"{where} must hold M={m} values (one per group of {group_name}={pac} samples) or "
            f"lay them out per sample over real's shape {shape} (leading axis {n}, each other "
            f"axis 1 or real's size there, e.g. [{n}], [{n}, 1] or {shape}), got shape "
            f"{list(alpha.shape)}")
    a = alpha
    for axis in range(1, a.dim()):
        if a.shape[axis] > 1 and a.stride(axis) == 0:
            a = a.narrow(axis, 0, 1)
    a = a.reshape(m, -1)
    first = a[:, :1]
    mixed = (a != first).any(dim=1)
    if bool(mixed.any()):
        j = int(mixed.nonzero()[0, 0])
        raise ValueError(
            f"{where} (shape {list(alpha.shape)}) must hold one value per group of "
            f"{group_name}={pac} samples, but group {j} holds different values (from "
            f"{a[j].min().item()} to {a[j].max().item()}); the fused penalty interpolates each "
            f"group with one alpha")
    return first.reshape(m)


# ---------------------------------------------------------------------------------------------
# The device argument of a code that draws alpha on it
# ---------------------------------------------------------------------------------------------


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type == "cuda" and (a.index is None) != (b.index is None):
        current = torch.cuda.current_device()
        return (a.index if a.index is not None else current) == (
            b.index if b.index is not None else current)
    return a.index == b.index


def check_device(name: str, device, data: Tensor, data_name: str) -> torch.device:
    """`device` as a torch.device, where it is the device `data` lives on; else the error the
    code drawing alpha on `device` would meet, said plainly."""
    try:
        dev = torch.device(device)
    except (TypeError, RuntimeError):
        raise TypeError(f"{name} must be a torch.device or a device string such as 'cpu' or "
                        f"'cuda', got {device!r}") from None
    if not _same_device(dev, data.device):
        raise ValueError(
            f"{name} is {str(dev)!r} but {data_name} is on {data.device}: alpha is drawn on "
            f"{name}, as the replaced code draws it, and cannot meet data on another device "
            f"(the original fails there too); pass {name}={str(data.device)!r} or move the data")
    return dev
