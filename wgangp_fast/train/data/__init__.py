"""Training data for the trainer: synthetic 2-D mixtures (points.py), the bundled digits, local
image arrays and a local MNIST folder (images.py), tabular CSV files (tables.py), on the
`Dataset` interface and `BatchSampler` of base.py. Nothing is downloaded.
"""

from __future__ import annotations

import os
from typing import Sequence

from .base import BatchSampler, Dataset, TensorDataset
from .images import load_digits, load_image_array, load_mnist_folder
from .points import MixtureDataset, SwissRollDataset, grid25, ring8
from .stored import StoredDataset, is_table, signature
from .tables import TableCodec, TableMismatchError, TabularDataset, load_tabular_csv

__all__ = [
    "BatchSampler",
    "Dataset",
    "DATASETS",
    "FILE_DATASETS",
    "KINDS",
    "dataset_for_path",
    "MixtureDataset",
    "StoredDataset",
    "TableCodec",
    "TableMismatchError",
    "SwissRollDataset",
    "TensorDataset",
    "TabularDataset",
    "grid25",
    "is_table",
    "load_dataset",
    "load_digits",
    "load_image_array",
    "load_mnist_folder",
    "load_tabular_csv",
    "ring8",
    "signature",
]

SYNTHETIC = ("ring8", "grid25", "swissroll")
DATASETS = SYNTHETIC + ("digits", "images", "mnist", "csv")
# the datasets read from a file or folder (--data PATH)
FILE_DATASETS = ("images", "mnist", "csv")
# each dataset's kind of data (Dataset.kind), known before the data is read
KINDS = {"ring8": "points", "grid25": "points", "swissroll": "points", "digits": "image",
         "images": "image", "mnist": "image", "csv": "tabular"}


def dataset_for_path(path: str) -> str:
    """The file dataset a --data PATH names by its extension: .csv a table, .npy / .npz or a
    folder images; a ValueError for anything else."""
    lower = path.lower()
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith((".npy", ".npz")) or os.path.isdir(path):
        return "images"
    raise ValueError(f"--data {path}: cannot tell the dataset from the name (.csv is a table, "
                     f".npy / .npz or a folder images); say which with --dataset csv, images or "
                     f"mnist")


def load_dataset(name: str, path: str | None = None, *, image_size: int | None = None,
                 npz_key: str | None = None,
                 categorical: Sequence[str] | None = None, table_transform: str = "mode",
                 table_codec: TableCodec | dict | None = None) -> Dataset:
    """A dataset by name: ring8, grid25, swissroll, digits, images (a .npy/.npz file at `path`),
    mnist (a local MNIST folder at `path`) or csv (a table at `path`, its numeric columns
    encoded by `table_transform`, or by `table_codec`, a checkpoint's, when given)."""
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
        return load_tabular_csv(path, categorical, transform=table_transform, codec=table_codec)
    if name == "ring8":
        return ring8()
    if name == "grid25":
        return grid25()
    if name == "swissroll":
        return SwissRollDataset()
    return load_digits(image_size)


