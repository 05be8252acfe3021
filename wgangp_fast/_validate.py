"""Argument checks shared by the public API. Every error names the argument and what was expected."""

from __future__ import annotations

import math
from typing import Optional

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


def pac(pac_value, n: int, name: str = "real") -> int:
    if isinstance(pac_value, bool) or not isinstance(pac_value, int):
        raise TypeError(f"pac must be a positive int, got {pac_value!r}")
    if pac_value < 1:
        raise ValueError(f"pac must be at least 1, got {pac_value}")
    if n % pac_value != 0:
        raise ValueError(
            f"the batch size of {name} (N={n}) must be a multiple of pac={pac_value}"
        )
    return n // pac_value


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
    # A plain float (the common case, once per op call) skips the type conversions.
    if type(x) is not float:
        if isinstance(x, torch.Tensor):
            if x.numel() != 1:
                raise TypeError(f"{name} must be a number, got a tensor of shape {list(x.shape)}")
            x = x.item()
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise TypeError(f"{name} must be a number, got {x!r}")
        x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x}")
    if minimum is not None and x < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {x}")
    if positive and x <= 0:
        raise ValueError(f"{name} must be > 0, got {x}")
    return x


def reduction(value) -> int:
    if value not in REDUCTIONS:
        raise ValueError(f"reduction must be one of 'mean', 'sum', 'none', got {value!r}")
    return REDUCTIONS[value]
