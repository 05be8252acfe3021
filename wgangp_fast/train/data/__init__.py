"""Training data for the trainer: synthetic 2-D mixtures (points.py), the bundled digits, local
image arrays and a local MNIST folder (images.py), tabular CSV files (tables.py), on the
`Dataset` interface and `BatchSampler` of base.py. Nothing is downloaded.
"""

from __future__ import annotations

from typing import Sequence

from .base import BatchSampler, Dataset, TensorDataset
from .images import load_digits, load_image_array, load_mnist_folder
from .points import MixtureDataset, SwissRollDataset, grid25, ring8
from .tables import TabularDataset, load_tabular_csv

__all__ = [
    "BatchSampler",
    "Dataset",
    "DATASETS",
    "MixtureDataset",
    "SwissRollDataset",
    "TensorDataset",
    "TabularDataset",
    "grid25",
    "load_dataset",
    "load_digits",
    "load_image_array",
    "load_mnist_folder",
    "load_tabular_csv",
    "ring8",
]

SYNTHETIC = ("ring8", "grid25", "swissroll")
DATASETS = SYNTHETIC + ("digits", "images", "mnist", "csv")


def load_dataset(name: str, path: str | None = None, *, image_size: int | None = None,
                 npz_key: str | None = None,
                 categorical: Sequence[str] | None = None) -> Dataset:
    """A dataset by name: ring8, grid25, swissroll, digits, images (a .npy/.npz file at `path`),
    mnist (a local MNIST folder at `path`) or csv (a table at `path`)."""
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {name!r}")
    if npz_key is not None and name != "images":
        raise ValueError(f"--npz-key {npz_key!r} chooses an array of an --images .npz file; "
                         f"dataset {name!r} has none: drop --npz-key")
    if name in ("images", "mnist", "csv"):
        if not path:
            raise ValueError(f"dataset {name!r} needs a path to a local file or folder "
                             f"(--data PATH)")
        if name == "images":
            return load_image_array(path, npz_key, image_size)
        if name == "mnist":
            return load_mnist_folder(path, image_size)
        return load_tabular_csv(path, categorical)
    if name == "ring8":
        return ring8()
    if name == "grid25":
        return grid25()
    if name == "swissroll":
        return SwissRollDataset()
    return load_digits(image_size)


