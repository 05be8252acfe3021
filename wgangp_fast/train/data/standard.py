"""Local copies of MNIST, Fashion-MNIST and CIFAR-10, as uint8 labelled datasets. Nothing is
downloaded.

MNIST and Fashion-MNIST are read by torchvision.datasets (download off) from the uncompressed
IDX files train-images-idx3-ubyte and train-labels-idx1-ubyte, found in the folder given, its
raw/ or its MNIST/raw/ (FashionMNIST/raw/): torchvision's layout. torchvision's reader of the
files it once cached as .pt (processed/) is not used.

CIFAR-10: torchvision's reader runs pickle.load on the batch files of the python version, which
would run any code a crafted file holds. So the binary version (cifar-10-batches-bin: records of
one label byte and 3072 pixel bytes) is read as raw bytes, and the python version
(cifar-10-batches-py) through `ArraysOnlyUnpickler`, which builds numpy arrays, lists, dicts,
strings, bytes and numbers and refuses every other global a pickle names.
"""

from __future__ import annotations

import io
import os
import pickle
from typing import List, Optional

import numpy as np
import torch

from .folders import require_torchvision
from .pixels import UInt8ImageDataset

__all__ = ["ArraysOnlyUnpickler", "load_cifar10", "load_mnist", "resize_pixels"]

MNIST_KINDS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_IMAGES, _LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"


def resize_pixels(pixels: np.ndarray, image_size: Optional[int], chunk: int = 4096) -> np.ndarray:
    """[N, C, H, W] uint8 -> [N, C, S, S] uint8: shorter side resized (antialiased), centre
    crop, through torchvision.transforms.v2; unchanged when already S x S or S is None."""
    if image_size is None or pixels.shape[-2:] == (image_size, image_size):
        return pixels
    from torchvision.transforms import v2

    out = np.empty(pixels.shape[:2] + (image_size, image_size), dtype=np.uint8)
    for i in range(0, len(pixels), chunk):
        part = torch.from_numpy(np.ascontiguousarray(pixels[i:i + chunk]))
        part = v2.functional.resize(part, [image_size], antialias=True)
        out[i:i + chunk] = v2.functional.center_crop(part, [image_size, image_size]).numpy()
    return out


def load_mnist(folder: str, image_size: Optional[int] = None,
               kind: str = "mnist") -> UInt8ImageDataset:
    """The 60000 training images and labels of a local MNIST or Fashion-MNIST copy."""
    tv = require_torchvision(f"reading {kind} (--dataset {kind})")
    cls_name = MNIST_KINDS[kind]
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{kind} folder not found: {folder}")
    places = [folder, os.path.join(folder, "raw"), os.path.join(folder, cls_name, "raw")]
    found = next((p for p in places if os.path.isfile(os.path.join(p, _IMAGES))
                  and os.path.isfile(os.path.join(p, _LABELS))), None)
    if found is None:
        gz = [p for p in places if os.path.isfile(os.path.join(p, _IMAGES + ".gz"))]
        hint = (f"; {gz[0]} holds them compressed: gunzip the .gz files there first"
                if gz else "")
        raise FileNotFoundError(f"{folder}: no {kind} training files {_IMAGES} and {_LABELS} "
                                f"in it, in raw/ or in {cls_name}/raw/{hint}")
    base = getattr(tv.datasets, cls_name)

    class _Local(base):
        # the files where they were found; never the .pt files of old torchvision versions
        raw_folder = found

        def _check_legacy_exist(self):
            return False

        def _check_exists(self):
            return True

    try:
        ds = _Local(folder, train=True, download=False)
    except (RuntimeError, ValueError, AssertionError, OSError) as exc:
        raise ValueError(f"{found}: cannot read the {kind} IDX files ({exc})") from None
    pixels = ds.data.numpy()[:, None]
    names = [str(c) for c in base.classes]
    return UInt8ImageDataset(kind, resize_pixels(pixels, image_size), ds.targets.numpy(), names)


def _latin1_bytes(text, encoding="latin1"):
    """How Python 3 pickles bytes at protocols 0-2 (codecs.encode(str, "latin1")): admitted for
    that one encoding only."""
    if not isinstance(text, str) or encoding.lower().replace("-", "") != "latin1":
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class ArraysOnlyUnpickler(pickle.Unpickler):
    """An unpickler that admits numpy arrays (and their dtypes) as the only globals: lists,
    dicts, strings, bytes and numbers need none. Any other global a pickle names (a function to
    call, a class to build) is an UnpicklingError before it is looked up, so nothing runs."""

    def __init__(self, file, **kwargs):
        super().__init__(file, **kwargs)
        try:
            from numpy._core.multiarray import _reconstruct
        except ImportError:  # numpy < 2
            from numpy.core.multiarray import _reconstruct
        self._allowed = {("numpy.core.multiarray", "_reconstruct"): _reconstruct,
                         ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
                         ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                         ("_codecs", "encode"): _latin1_bytes}

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: only numpy arrays, "
                                         f"lists, dicts, strings, bytes and numbers are read"
                                         ) from None


def _unpickle_arrays(path: str):
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return ArraysOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as exc:
        raise ValueError(f"{path}: not a CIFAR-10 python batch ({type(exc).__name__}: "
                         f"{exc})") from None


_CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                  "ship", "truck"]
_RECORD = 1 + 3 * 32 * 32


def _cifar_binary(folder: str):
    parts, labels = [], []
    for i in range(1, 6):
        path = os.path.join(folder, f"data_batch_{i}.bin")
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % _RECORD:
            raise ValueError(f"{path}: {raw.size} bytes, not a whole number of CIFAR-10 records "
                             f"of {_RECORD} bytes (a label byte and 32x32x3 pixels)")
        records = raw.reshape(-1, _RECORD)
        labels.append(records[:, 0].astype(np.int64))
        parts.append(records[:, 1:].reshape(-1, 3, 32, 32))
    names = _CIFAR_CLASSES
    meta = os.path.join(folder, "batches.meta.txt")
    if os.path.isfile(meta):
        with open(meta) as f:
            listed = [line.strip() for line in f if line.strip()]
        names = listed if len(listed) == 10 else names
    return np.concatenate(parts), np.concatenate(labels), names


def _cifar_python(folder: str):
    parts, labels = [], []
    for i in range(1, 6):
        path = os.path.join(folder, f"data_batch_{i}")
        batch = _unpickle_arrays(path)
        data = batch.get("data") if isinstance(batch, dict) else None
        ys = batch.get("labels") if isinstance(batch, dict) else None
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
                and data.shape[1] == 3072 and isinstance(ys, list) and len(ys) == len(data)
                and all(isinstance(y, int) for y in ys)):
            raise ValueError(f"{path}: not a CIFAR-10 python batch (a dict with a uint8 'data' "
                             f"array [N, 3072] and N integer 'labels')")
        parts.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(ys, dtype=np.int64))
    names = _CIFAR_CLASSES
    meta_path = os.path.join(folder, "batches.meta")
    if os.path.isfile(meta_path):
        meta = _unpickle_arrays(meta_path)
        listed = meta.get("label_names") if isinstance(meta, dict) else None
        if isinstance(listed, list) and len(listed) == 10:
            names = [str(n) for n in listed]
    return np.concatenate(parts), np.concatenate(labels), names


def load_cifar10(folder: str, image_size: Optional[int] = None) -> UInt8ImageDataset:
    """The 50000 training images of a local CIFAR-10 copy: `folder` is, or holds,
    cifar-10-batches-bin (preferred) or cifar-10-batches-py."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"CIFAR-10 folder not found: {folder}")
    if image_size is not None and image_size != 32:
        require_torchvision("resizing CIFAR-10 (--image-size)")
    candidates: List[tuple] = []
    for sub in ("", "cifar-10-batches-bin", "cifar-10-batches-py"):
        path = os.path.join(folder, sub)
        if os.path.isfile(os.path.join(path, "data_batch_1.bin")):
            candidates.append((_cifar_binary, path))
        elif os.path.isfile(os.path.join(path, "data_batch_1")):
            candidates.append((_cifar_python, path))
    if not candidates:
        raise FileNotFoundError(f"{folder}: no CIFAR-10 training batches (data_batch_1.bin ... "
                                f"of cifar-10-batches-bin, or data_batch_1 ... of "
                                f"cifar-10-batches-py) in it or in those subfolders")
    read, path = sorted(candidates, key=lambda c: c[0] is not _cifar_binary)[0]
    try:
        pixels, labels, names = read(path)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{path}: a CIFAR-10 batch is missing ({exc.filename})"
                                ) from None
    if labels.max() >= 10:
        raise ValueError(f"{path}: CIFAR-10 labels must be 0..9, found {int(labels.max())}")
    return UInt8ImageDataset("cifar10", resize_pixels(pixels, image_size), labels, names)
