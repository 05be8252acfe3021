"""Argument checks shared by the public API. Every error names the argument and what was expected."""

from __future__ import annotations

import math
import numbers
from typing import Optional

import numpy as np
import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}


def tensor(name: str, t) -> torch.Tensor:
    """A non-empty floating-point tensor with a batch dimension."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be a floating-point tensor (float16, bfloat16, float32 or float64), "
            f"got {t.dtype}"
        )
    if t.dim() == 0:
        raise ValueError(f"{name} must have a batch dimension (shape [N, ...]), got a 0-d tensor")
    if t.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {list(t.shape)}): N must be at least 1")
    if t.numel() == 0:
        raise ValueError(f"{name} has no elements per sample (shape {list(t.shape)})")
    return t


def pair(real, fake) -> None:
    tensor("real", real)
    tensor("fake", fake)
    if real.shape != fake.shape:
        raise ValueError(
            f"real and fake must have the same shape, got real {list(real.shape)} "
            f"and fake {list(fake.shape)}"
        )
    if real.dtype != fake.dtype:
        raise TypeError(f"real and fake must have the same dtype, got {real.dtype} and {fake.dtype}")
    if real.device != fake.device:
        raise ValueError(
            f"real and fake must be on the same device, got {real.device} and {fake.device}"
        )


def _is_bool(x) -> bool:
    return isinstance(x, (bool, np.bool_))


def integer(name: str, x) -> int:
    """A Python int from an int or any integral number (numpy's included), never a bool."""
    if type(x) is int:
        return x
    if _is_bool(x) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {x!r} ({type(x).__name__})")
    return int(x)


def flag(name: str, x) -> bool:
    """A Python bool from a bool or a numpy bool."""
    if not _is_bool(x):
        raise TypeError(f"{name} must be a bool (True or False), got {x!r} ({type(x).__name__})")
    return bool(x)


def pac(pac_value, n: int, name: str = "real") -> int:
    if type(pac_value) is not int:
        if _is_bool(pac_value) or not isinstance(pac_value, numbers.Integral):
            raise TypeError(f"pac must be a positive int, got {pac_value!r}")
        pac_value = int(pac_value)
    if pac_value < 1:
        raise ValueError(f"pac must be at least 1, got {pac_value}")
    if n % pac_value != 0:
        raise ValueError(
            f"the batch size of {name} (N={n}) must be a multiple of pac={pac_value}"
        )
    return n // pac_value


def group_size(name: str, value, n: int, data_name: str = "real") -> int:
    """Samples per group from "sample" (1), "batch" (n) or a positive int dividing n."""
    if isinstance(value, str):
        if value == "sample":
            return 1
        if value == "batch":
            return n
        raise ValueError(f"{name} must be 'sample', 'batch' or a number of samples per group, "
                         f"got {value!r}")
    if _is_bool(value) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be 'sample', 'batch' or a number of samples per group (a "
                        f"positive int), got {value!r}")
    value = int(value)
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    if n % value != 0:
        raise ValueError(f"the batch size of {data_name} (N={n}) must be a multiple of "
                         f"{name}={value}")
    return value


def group_vector(name: str, v, m: int, like: torch.Tensor) -> torch.Tensor:
    """A tensor of M per-group values in any shape that flattens to M ([M], [M,1], [M,1,1], ...)."""
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of {m} values, got {type(v).__name__}")
    if v.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating-point tensor, got {v.dtype}")
    if v.numel() != m:
        raise ValueError(
            f"{name} must hold M={m} values (one per group of pac samples), "
            f"got shape {list(v.shape)} ({v.numel()} values)"
        )
    if v.device != like.device:
        raise ValueError(f"{name} must be on {like.device}, got {v.device}")
    return v.reshape(m)


def finite(name: str, x, *, minimum: Optional[float] = None, positive: bool = False) -> float:
    """A finite Python float from a number (numpy's included) or a one-element tensor that does
    not require grad: the value becomes a constant of the op, so a gradient asked of it would be
    silently lost."""
    # A plain float (the common case, once per op call) skips the type conversions.
    if type(x) is not float:
        if isinstance(x, torch.Tensor):
            if x.numel() != 1:
                raise TypeError(f"{name} must be a number, got a tensor of shape {list(x.shape)}")
            if x.requires_grad:
                raise TypeError(
                    f"{name} is a tensor that requires grad, but the op takes {name} as a "
                    f"constant and no gradient would reach it: pass a number, or "
                    f"{name}.detach() if no gradient is wanted")
            x = x.item()
        if _is_bool(x) or not isinstance(x, numbers.Real):
            raise TypeError(f"{name} must be a number, got {x!r}")
        x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x}")
    if minimum is not None and x < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {x}")
    if positive and x <= 0:
        raise ValueError(f"{name} must be > 0, got {x}")
    return x


def scale_tensor(name: str, t: torch.Tensor) -> torch.Tensor:
    """A one-element floating-point tensor that requires grad, as a 0-d tensor: the op multiplies
    its result by it, so the gradient reaches it (d out / d scale = out / scale)."""
    if t.numel() != 1:
        raise TypeError(f"{name} must be a number or a one-element tensor, got a tensor of shape "
                        f"{list(t.shape)}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    value = t.detach().item()
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return t.reshape(())


def reduction(value) -> int:
    if not isinstance(value, str):
        raise TypeError(f"reduction must be a str, one of 'mean', 'sum', 'none', got {value!r} "
                        f"({type(value).__name__})")
    if value not in REDUCTIONS:
        raise ValueError(f"reduction must be one of 'mean', 'sum', 'none', got {value!r}")
    return REDUCTIONS[value]
