"""`UInt8ImageDataset`: images kept as uint8 pixels (an array, or a memory map of a decoded
folder's cache), turned into model space ([-1, 1] float32) one drawn batch at a time.

A float copy of a set would take four times its pixels (a 50k 32x32 RGB set: 614 MB instead of
154 MB, a 200k 64x64 one 9.8 GB): here only the drawn rows are read and converted, and a memory
map leaves the rest to the page cache.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from .base import Dataset

__all__ = ["UInt8ImageDataset"]


class UInt8ImageDataset(Dataset):
    """[N, C, H, W] uint8 pixels (0..255 -> [-1, 1]), optional integer labels and class names.

    Batches are drawn uniformly with replacement, as TensorDataset draws them (the same index
    draw from the sampler's generator), so the stream is seeded and resumable."""

    kind = "image"

    def __init__(self, name: str, pixels: np.ndarray, labels: Optional[np.ndarray] = None,
                 class_names: Optional[Sequence[str]] = None,
                 notes: Sequence[str] = ()) -> None:
        if pixels.dtype != np.uint8 or pixels.ndim != 4:
            raise ValueError(f"dataset {name!r}: expected uint8 pixels [N, C, H, W], got dtype "
                             f"{pixels.dtype} and shape {list(pixels.shape)}")
        if pixels.shape[0] == 0:
            raise ValueError(f"dataset {name!r} is empty")
        self.name = name
        self.pixels = pixels
        self.shape = tuple(int(s) for s in pixels.shape[1:])
        self.low, self.high = 0.0, 255.0
        if labels is not None:
            labels = np.asarray(labels, dtype=np.int64)
            if labels.shape != (pixels.shape[0],):
                raise ValueError(f"dataset {name!r}: {labels.shape} labels for "
                                 f"{pixels.shape[0]} images")
        self.labels = labels
        self.class_names: Optional[List[str]] = (list(class_names) if class_names is not None
                                                 else None)
        self.notes = list(notes)

    def __len__(self) -> int:
        return self.pixels.shape[0]

    @property
    def nbytes(self) -> int:
        return int(self.pixels.nbytes)

    def to_model_space(self, rows: np.ndarray) -> Tensor:
        """uint8 rows -> float32 in [-1, 1]."""
        return torch.from_numpy(np.ascontiguousarray(rows)).float().div_(127.5).sub_(1.0)

    def _draw(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.randint(len(self), (n,), generator=generator)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return self.to_model_space(self.pixels[self._draw(n, generator).numpy()])

    def sample_labelled(self, n: int, generator: torch.Generator) -> Tuple[Tensor, Tensor]:
        idx = self._draw(n, generator).numpy()
        return self.to_model_space(self.pixels[idx]), torch.from_numpy(self.labels[idx])

    def reference(self, n: int, seed: int = 0) -> np.ndarray:
        if n >= len(self):
            idx = np.arange(len(self))
        else:
            g = torch.Generator().manual_seed(seed)
            idx = np.sort(torch.randperm(len(self), generator=g)[:n].numpy())
        return self.to_model_space(self.pixels[idx]).numpy()

    def decode(self, x: np.ndarray) -> np.ndarray:
        """[-1, 1] -> 0..255 (float)."""
        x = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
        return (x + 1.0) * 127.5
