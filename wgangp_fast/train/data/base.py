"""What every dataset gives the trainer (`Dataset`), the in-memory set behind the finite ones
(`TensorDataset`) and the seeded, checkpointable `BatchSampler` that draws real batches.

Every dataset maps data to a "model space" (what the critic sees, e.g. images in [-1, 1] or
standardised table columns) and back (`decode`, to the data's own units). Real batches are drawn
i.i.d. with replacement by a `BatchSampler` that owns its own `torch.Generator`, so a run's data
stream is reproducible and can be checkpointed and resumed exactly.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["BatchSampler", "Dataset", "TensorDataset"]


class Dataset:
    """What the trainer needs from a dataset.

    kind: "points" (2-D and other low-dimensional vectors), "image" ([C, H, W]) or "tabular".
    shape: the shape of one sample in model space.
    labels / class_names: a labelled set's class index per sample and the classes' names (what
    a conditional run needs); None for an unlabelled one.
    notes: one-line remarks about how the data was read (conversions), for the run to show.
    """

    name: str = "dataset"
    kind: str = "points"
    shape: Tuple[int, ...] = (2,)
    labels: Optional[np.ndarray] = None
    class_names: Optional[List[str]] = None
    notes: Tuple[str, ...] = ()

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def sample_labelled(self, n: int, generator: torch.Generator) -> Tuple[Tensor, Tensor]:
        """n samples and their labels (int64), drawn together."""
        raise ValueError(f"dataset {self.name!r} has no labels")

    def sample_labels(self, n: int, generator: torch.Generator) -> Tensor:
        """n labels drawn as the samples' labels are (the data's class frequencies): the
        classes of a conditional generator step."""
        if self.labels is None:
            raise ValueError(f"dataset {self.name!r} has no labels")
        idx = torch.randint(len(self.labels), (n,), generator=generator)
        return torch.from_numpy(np.asarray(self.labels, dtype=np.int64)[idx.numpy()])

    def decode(self, x: np.ndarray) -> np.ndarray:
        """Model-space samples -> the data's own units (identity unless overridden)."""
        return np.asarray(x)

    def reference(self, n: int, seed: int = 0) -> np.ndarray:
        """n real samples in model space, for metrics and plots."""
        g = torch.Generator().manual_seed(seed)
        return self.sample(n, g).numpy()

    @property
    def dim(self) -> int:
        return math.prod(self.shape)


class TensorDataset(Dataset):
    """A finite set held in memory (model space); batches are drawn uniformly with replacement."""

    def __init__(self, name: str, data: Tensor, kind: str, low: float = -1.0,
                 high: float = 1.0, labels: np.ndarray | None = None,
                 class_names: List[str] | None = None) -> None:
        if data.shape[0] == 0:
            raise ValueError(f"dataset {name!r} is empty")
        self.name = name
        self.data = data.float().contiguous()
        self.kind = kind
        self.shape = tuple(self.data.shape[1:])
        self.low, self.high = float(low), float(high)
        if labels is not None:
            labels = np.asarray(labels, dtype=np.int64)
            if labels.shape != (self.data.shape[0],):
                raise ValueError(f"dataset {name!r}: {list(labels.shape)} labels for "
                                 f"{self.data.shape[0]} samples")
        self.labels = labels
        self.class_names = list(class_names) if class_names is not None else None
        self.notes = []

    def __len__(self) -> int:
        return self.data.shape[0]

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        idx = torch.randint(self.data.shape[0], (n,), generator=generator)
        return self.data[idx]

    def sample_labelled(self, n: int, generator: torch.Generator) -> Tuple[Tensor, Tensor]:
        if self.labels is None:
            raise ValueError(f"dataset {self.name!r} has no labels")
        idx = torch.randint(self.data.shape[0], (n,), generator=generator)
        return self.data[idx], torch.from_numpy(self.labels[idx.numpy()])

    def reference(self, n: int, seed: int = 0) -> np.ndarray:
        if n >= len(self):
            return self.data.numpy()
        g = torch.Generator().manual_seed(seed)
        return self.data[torch.randperm(len(self), generator=g)[:n]].numpy()

    def decode(self, x: np.ndarray) -> np.ndarray:
        """[-1, 1] -> the original value range of the data (e.g. 0..16 for digits)."""
        x = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
        return (x + 1.0) / 2.0 * (self.high - self.low) + self.low


class BatchSampler:
    """Draws real batches from a dataset with its own seeded generator (checkpointable).

    For data-parallel training each rank passes its own seed (e.g. seed + rank), which gives each
    rank an independent stream: with i.i.d. sampling with replacement that is a valid shard.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int,
                 device: torch.device | str = "cpu") -> None:
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(int(seed))

    def next(self) -> Tensor:
        batch = self.dataset.sample(self.batch_size, self.generator)
        return batch.to(self.device, non_blocking=True)

    def next_labelled(self) -> Tuple[Tensor, Tensor]:
        """A real batch and its labels (a conditional run's critic step)."""
        batch, labels = self.dataset.sample_labelled(self.batch_size, self.generator)
        return (batch.to(self.device, non_blocking=True),
                labels.to(self.device, non_blocking=True))

    def next_labels(self) -> Tensor:
        """Labels at the data's class frequencies (a conditional run's generator step)."""
        return self.dataset.sample_labels(self.batch_size, self.generator).to(self.device)

    def state_dict(self) -> Dict[str, Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Dict[str, Tensor]) -> None:
        self.generator.set_state(state["generator"])
