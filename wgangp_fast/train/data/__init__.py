"""Training data for the trainer: synthetic 2-D mixtures (points.py), the bundled digits and local
image arrays (images.py), folders of image files (folders.py, decoded once into a uint8 cache:
cache.py, pixels.py), local MNIST, Fashion-MNIST and CIFAR-10 copies (standard.py), tabular CSV
files (tables.py; with a class column: table_labels.py), on the `Dataset` interface and
`BatchSampler` of base.py. Nothing is downloaded.
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

from .base import BatchSampler, Dataset, TensorDataset
from .cache import default_cache_dir, load_image_folder
from .folders import DEFAULT_MAX_IMAGE_PIXELS, ImageFileError
from .images import load_digits, load_image_array
from .pixels import UInt8ImageDataset
from .points import MixtureDataset, SwissRollDataset, grid25, ring8
from .standard import load_cifar10, load_mnist
from .stored import StoredDataset, is_table, signature
from .table_labels import load_labelled_csv
from .tables import TableCodec, TableMismatchError, TabularDataset, load_tabular_csv

__all__ = [
    "BatchSampler",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "Dataset",
    "DATASETS",
    "FILE_DATASETS",
    "ImageFileError",
    "KINDS",
    "dataset_for_path",
    "MixtureDataset",
    "StoredDataset",
    "TableCodec",
    "TableMismatchError",
    "SwissRollDataset",
    "TensorDataset",
    "TabularDataset",
    "UInt8ImageDataset",
    "default_cache_dir",
    "grid25",
    "is_table",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_image_array",
    "load_image_folder",
    "load_labelled_csv",
    "load_mnist",
    "load_tabular_csv",
    "ring8",
    "signature",
]

SYNTHETIC = ("ring8", "grid25", "swissroll")
# the datasets read from a local file or folder (--data PATH)
FILE_DATASETS = ("images", "mnist", "fashion-mnist", "cifar10", "csv")
DATASETS = SYNTHETIC + ("digits",) + FILE_DATASETS
# each dataset's kind of data (Dataset.kind), known before the data is read
KINDS = {"ring8": "points", "grid25": "points", "swissroll": "points", "digits": "image",
         "images": "image", "mnist": "image", "fashion-mnist": "image", "cifar10": "image",
         "csv": "tabular"}


def dataset_for_path(path: str) -> str:
    """The file dataset a --data PATH names by its extension: .csv a table, .npy / .npz or a
    folder images; a ValueError for anything else."""
    lower = path.lower()
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith((".npy", ".npz")) or os.path.isdir(path):
        return "images"
    raise ValueError(f"--data {path}: cannot tell the dataset from the name (.csv is a table, "
                     f".npy / .npz or a folder images); say which with --dataset csv, images, "
                     f"mnist, fashion-mnist or cifar10")


def load_dataset(name: str, path: str | None = None, *, image_size: int | None = None,
                 npz_key: str | None = None,
                 categorical: Sequence[str] | None = None,
                 label_column: str | None = None, image_cache: str | None = None,
                 max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, decode_workers: int = 0,
                 log: Optional[Callable[[str], None]] = None, table_transform: str = "mode",
                 table_codec: TableCodec | dict | None = None) -> Dataset:
    """A dataset by name: ring8, grid25, swissroll, digits, images (a folder of image files, or
    a .npy/.npz array, at `path`), mnist / fashion-mnist / cifar10 (a local copy's folder at
    `path`) or csv (a table at `path`; `label_column` names its class column; its numeric
    columns encoded by `table_transform`, or by `table_codec`, a checkpoint's, when given).
    Folders of images are decoded once into `image_cache` (default: default_cache_dir()), with
    `decode_workers` threads, every header checked against `max_image_pixels` first; `log` gets
    a line when a cache is built."""
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {name!r}")
    if npz_key is not None and name != "images":
        raise ValueError(f"--npz-key {npz_key!r} chooses an array of an --images .npz file; "
                         f"dataset {name!r} has none: drop --npz-key")
    if label_column is not None and name != "csv":
        raise ValueError(f"--label-column {label_column!r} names the class column of a CSV "
                         f"table; dataset {name!r} is not one (image folders take their "
                         f"classes from their subfolders)")
    if name in FILE_DATASETS:
        if not path:
            raise ValueError(f"dataset {name!r} needs a path to a local file or folder "
                             f"(--data PATH)")
        if name == "images":
            if os.path.isdir(path):
                return load_image_folder(path, image_size, cache_dir=image_cache,
                                         max_pixels=max_image_pixels, workers=decode_workers,
                                         log=log)
            if not os.path.exists(path):
                raise FileNotFoundError(f"--images {path}: no such folder or file (a folder of "
                                        f"image files, or a .npy/.npz array)")
            return load_image_array(path, npz_key, image_size)
        if name in ("mnist", "fashion-mnist"):
            return load_mnist(path, image_size, name)
        if name == "cifar10":
            return load_cifar10(path, image_size)
        if label_column is not None:
            return load_labelled_csv(path, label_column, categorical, transform=table_transform,
                                     codec=table_codec)
        return load_tabular_csv(path, categorical, transform=table_transform, codec=table_codec)
    if name == "ring8":
        return ring8()
    if name == "grid25":
        return grid25()
    if name == "swissroll":
        return SwissRollDataset()
    return load_digits(image_size)
