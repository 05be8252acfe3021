"""A dataset as a run's checkpoint describes it (`signature`, `StoredDataset`): the kind and
shape its models were built for and what decoding their samples needs (an image's value range, a
table's columns and encodings), so that a trained run can be sampled without its data file."""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import numpy as np
import torch
from torch import Tensor

from .base import Dataset, TensorDataset
from .tables import TableCodec, TabularDataset

__all__ = ["StoredDataset", "signature"]


def signature(dataset: Dataset) -> Dict[str, Any]:
    """What the models were built for and what decoding needs, in plain Python values: the
    name, kind and sample shape; for tables the columns, their categories and encodings (a
    category added to a CSV column changes the one-hot width); for images the value range."""
    sig: Dict[str, Any] = {"shape": list(dataset.shape), "kind": dataset.kind,
                           "name": getattr(dataset, "name", "dataset")}
    codec = getattr(dataset, "codec", None)
    if isinstance(codec, TableCodec):
        sig["columns"] = codec.names
        sig["categories"] = {c.name: list(c.categories) for c in codec.columns
                             if hasattr(c, "categories")}
        sig["table"] = codec.to_dict()
    if dataset.kind == "image" and hasattr(dataset, "low"):
        sig["low"], sig["high"] = float(dataset.low), float(dataset.high)
    labels = getattr(dataset, "labels", None)
    if labels is not None:
        # a conditional run's classes and their frequencies: what sampling a class needs
        counts = np.bincount(np.asarray(labels, dtype=np.int64))
        names = getattr(dataset, "class_names", None) or [str(k) for k in range(len(counts))]
        sig["class_names"] = list(names)
        sig["class_counts"] = [int(c) for c in np.pad(counts, (0, len(names) - len(counts)))]
        column = getattr(dataset, "label_column", None)
        if column:
            sig["label_column"] = str(column)
    return sig


class StoredDataset(Dataset):
    """The dataset a checkpoint's `signature` describes, for building its models and decoding
    their samples; it holds no data (sample() is an error)."""

    def __init__(self, sig: Dict[str, Any]) -> None:
        if "kind" not in sig:
            raise ValueError("the checkpoint does not describe its data (written before samples "
                             "could be decoded without the data file): give the data file too")
        self.name = str(sig.get("name", "dataset"))
        self.kind = str(sig["kind"])
        self.shape = tuple(int(s) for s in sig["shape"])
        self.low, self.high = float(sig.get("low", -1.0)), float(sig.get("high", 1.0))
        self.codec = TableCodec.from_dict(sig["table"]) if "table" in sig else None
        if "class_names" in sig:
            self.class_names = [str(n) for n in sig["class_names"]]
            counts = np.asarray(sig["class_counts"], dtype=np.int64)
            # the labels at the data's class frequencies (their order is not kept: sampling a
            # class draws from the frequencies only)
            self.labels = np.repeat(np.arange(len(counts)), counts)
            self.label_column = sig.get("label_column")

    @property
    def categorical_spans(self) -> List[Tuple[int, int]]:
        return self.codec.categorical_spans if self.codec else []

    @property
    def tanh_columns(self) -> List[int]:
        return self.codec.tanh_columns if self.codec else []

    @property
    def tanh_scale(self) -> float:
        return self.codec.tanh_scale if self.codec else 1.0

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        raise RuntimeError(f"dataset {self.name!r} was rebuilt from a checkpoint to decode "
                           f"samples; it holds no data to train on")

    def decode(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "image":
            return TensorDataset.decode(self, x)
        return np.asarray(x)

    def decode_rows(self, x: np.ndarray) -> List[List[object]]:
        return self.codec.decode_rows(x)

    def write_csv(self, x: np.ndarray, path: str) -> None:
        self.codec.write_csv(x, path)


def is_table(dataset: Dataset) -> bool:
    """A table, loaded from its CSV or rebuilt from a checkpoint."""
    return isinstance(dataset, TabularDataset) or isinstance(getattr(dataset, "codec", None),
                                                             TableCodec)
