"""Training data for the trainer: synthetic 2-D mixtures, the bundled digits, local image arrays,
a local MNIST folder and tabular CSV files. Nothing is downloaded.

Every dataset maps data to a "model space" (what the critic sees, e.g. images in [-1, 1] or
standardised table columns) and back (`decode`, to the data's own units). Real batches are drawn
i.i.d. with replacement by a `BatchSampler` that owns its own `torch.Generator`, so a run's data
stream is reproducible and can be checkpointed and resumed exactly.

Synthetic sets (the mode-collapse benchmarks of VEEGAN / PacGAN):
- `ring8`: 8 Gaussians with centres on a circle of radius 2, std 0.02 each.
- `grid25`: 25 Gaussians with centres (-4 + 2i, -4 + 2j), i, j in 0..4, std 0.05 each.
- `swissroll`: the 2-D swiss roll t (cos t, sin t) / 7.5, t ~ U[1.5 pi, 4.5 pi], plus N(0, 0.25/7.5)
  noise per coordinate (the scaling of Gulrajani et al.'s toy experiments).
"""

from __future__ import annotations

import csv
import gzip
import math
import numbers
import os
import struct
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "BatchSampler",
    "Dataset",
    "DATASETS",
    "MixtureDataset",
    "SwissRollDataset",
    "TensorDataset",
    "TabularDataset",
    "load_dataset",
    "load_digits",
    "load_image_array",
    "load_mnist_folder",
    "load_tabular_csv",
]

SYNTHETIC = ("ring8", "grid25", "swissroll")
DATASETS = SYNTHETIC + ("digits", "images", "mnist", "csv")


class Dataset:
    """What the trainer needs from a dataset.

    kind: "points" (2-D and other low-dimensional vectors), "image" ([C, H, W]) or "tabular".
    shape: the shape of one sample in model space.
    """

    name: str = "dataset"
    kind: str = "points"
    shape: Tuple[int, ...] = (2,)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

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


class MixtureDataset(Dataset):
    """Isotropic Gaussian mixture with equal weights; an infinite stream of samples."""

    kind = "points"

    def __init__(self, name: str, centers: np.ndarray, std: float) -> None:
        self.name = name
        self.centers = np.asarray(centers, dtype=np.float64)
        self.std = float(std)
        self.shape = (self.centers.shape[1],)
        self._centers_t = torch.as_tensor(self.centers, dtype=torch.float32)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        idx = torch.randint(len(self.centers), (n,), generator=generator)
        noise = torch.randn(n, self.shape[0], generator=generator)
        return self._centers_t[idx] + self.std * noise


def ring8(radius: float = 2.0, std: float = 0.02) -> MixtureDataset:
    angles = 2 * np.pi * np.arange(8) / 8
    return MixtureDataset("ring8", radius * np.stack([np.cos(angles), np.sin(angles)], 1), std)


def grid25(spacing: float = 2.0, std: float = 0.05) -> MixtureDataset:
    ticks = spacing * (np.arange(5) - 2)
    xx, yy = np.meshgrid(ticks, ticks, indexing="ij")
    return MixtureDataset("grid25", np.stack([xx.ravel(), yy.ravel()], 1), std)


class SwissRollDataset(Dataset):
    name = "swissroll"
    kind = "points"
    shape = (2,)

    def __init__(self, noise: float = 0.25, scale: float = 7.5) -> None:
        self.noise = float(noise)
        self.scale = float(scale)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator))
        pts = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1)
        pts = pts + self.noise * torch.randn(n, 2, generator=generator)
        return pts / self.scale


class TensorDataset(Dataset):
    """A finite set held in memory (model space); batches are drawn uniformly with replacement."""

    def __init__(self, name: str, data: Tensor, kind: str, low: float = -1.0,
                 high: float = 1.0, labels: np.ndarray | None = None) -> None:
        if data.shape[0] == 0:
            raise ValueError(f"dataset {name!r} is empty")
        self.name = name
        self.data = data.float().contiguous()
        self.kind = kind
        self.shape = tuple(self.data.shape[1:])
        self.low, self.high = float(low), float(high)
        self.labels = labels

    def __len__(self) -> int:
        return self.data.shape[0]

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        idx = torch.randint(self.data.shape[0], (n,), generator=generator)
        return self.data[idx]

    def reference(self, n: int, seed: int = 0) -> np.ndarray:
        if n >= len(self):
            return self.data.numpy()
        g = torch.Generator().manual_seed(seed)
        return self.data[torch.randperm(len(self), generator=g)[:n]].numpy()

    def decode(self, x: np.ndarray) -> np.ndarray:
        """[-1, 1] -> the original value range of the data (e.g. 0..16 for digits)."""
        x = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
        return (x + 1.0) / 2.0 * (self.high - self.low) + self.low


def _to_unit_range(arr: np.ndarray, low: float, high: float) -> Tensor:
    if not high > low:
        raise ValueError(f"all pixels have the same value ({low}): nothing to learn")
    return torch.from_numpy(((arr.astype(np.float32) - low) / (high - low)) * 2.0 - 1.0)


def _resize(images: Tensor, image_size: int | None, name: str) -> Tensor:
    if image_size is None or images.shape[-1] == image_size == images.shape[-2]:
        return images
    if (isinstance(image_size, (bool, np.bool_)) or not isinstance(image_size, numbers.Integral)
            or image_size < 1):
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    image_size = int(image_size)
    # Bilinear resize: how 28x28 MNIST or 8x8 digits reach a convolutional model's 32x32 input.
    out = torch.nn.functional.interpolate(images, size=(image_size, image_size), mode="bilinear",
                                          align_corners=False)
    return out.clamp_(-1.0, 1.0)


def load_digits(image_size: int | None = None) -> TensorDataset:
    """scikit-learn's bundled 8x8 digits (1797 images, values 0..16) scaled to [-1, 1], [1, 8, 8].

    image_size (e.g. 32) resizes them bilinearly for convolutional models.
    """
    from sklearn.datasets import load_digits as _sk_digits

    bunch = _sk_digits()
    images = _to_unit_range(bunch.images, 0.0, 16.0).unsqueeze(1)
    return TensorDataset("digits", _resize(images, image_size, "digits"), "image", 0.0, 16.0,
                         labels=bunch.target)


def _array_images(arr: np.ndarray, path: str) -> Tuple[np.ndarray, float, float]:
    """[N, H, W], [N, C, H, W] or [N, H, W, C] (C in 1, 3, 4) -> [N, C, H, W] and value range."""
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"{path}: expected a numeric image array, got dtype {arr.dtype}")
    channels = (1, 3, 4)
    if arr.ndim == 3:
        # the plots and the models would take it as N narrow images; refused before training
        # rather than drawn wrongly after it
        if arr.shape[2] in channels and arr.shape[2] != arr.shape[1]:
            raise ValueError(f"{path}: shape {list(arr.shape)} reads as {arr.shape[0]} grayscale "
                             f"images of {arr.shape[1]}x{arr.shape[2]} pixels; if it is one "
                             f"colour image [H, W, C], save it as [1, H, W, C] (arr[None]), and "
                             f"a set of images as [N, H, W], [N, C, H, W] or [N, H, W, C]")
        arr = arr[:, None]
    elif arr.ndim == 4:
        if arr.shape[1] not in channels:
            if arr.shape[3] not in channels:
                raise ValueError(f"{path}: a 4-D image array needs its channels (1, 3 or 4) on "
                                 f"axis 1 ([N, C, H, W]) or axis 3 ([N, H, W, C]), got shape "
                                 f"{list(arr.shape)}; reorder the axes (e.g. with "
                                 f"numpy.moveaxis) or save one channel per image")
            arr = arr.transpose(0, 3, 1, 2)
    else:
        raise ValueError(f"{path}: expected images of shape [N, H, W], [N, C, H, W] or "
                         f"[N, H, W, C], got shape {list(arr.shape)}")
    if arr.shape[0] == 0:
        raise ValueError(f"{path}: the array holds no images (shape {list(arr.shape)})")
    arr = np.ascontiguousarray(arr)
    if not np.isfinite(arr.astype(np.float64, copy=False)).all():
        raise ValueError(f"{path}: the array contains NaN or infinite values")
    if arr.dtype == np.uint8:
        return arr, 0.0, 255.0
    return arr, float(arr.min()), float(arr.max())


def load_image_array(path: str, key: str | None = None,
                     image_size: int | None = None) -> TensorDataset:
    """Images from a local .npy or .npz file ([N, H, W], [N, C, H, W] or [N, H, W, C]).

    uint8 arrays are read as 0..255; float arrays are scaled from their own min..max to [-1, 1].
    In a .npz the array is `key`, else the only array, else one named x, images, data or arr_0;
    a key with a .npy file is an error (it holds one unnamed array).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read as a .npy/.npz array ({exc})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            names = list(loaded.files)
            if key is not None:
                if key not in names:
                    raise ValueError(f"{path}: no array named {key!r} (found {names})")
                chosen = key
            elif len(names) == 1:
                chosen = names[0]
            else:
                chosen = next((k for k in ("x", "images", "data", "arr_0") if k in names), None)
                if chosen is None:
                    raise ValueError(f"{path}: holds several arrays {names}; say which with key "
                                     f"(--npz-key)")
            arr = loaded[chosen]
    else:
        if key is not None:
            raise ValueError(f"{path} is a .npy file, which holds one unnamed array: key {key!r} "
                             f"(--npz-key) names an array of a .npz file; drop --npz-key, or "
                             f"pass the .npz file")
        arr = loaded
    arr, low, high = _array_images(arr, path)
    images = _resize(_to_unit_range(arr, low, high), image_size, path)
    return TensorDataset(os.path.basename(path), images, "image", low, high)


_MNIST_NAMES = ("train-images-idx3-ubyte", "train-images.idx3-ubyte")


def _read_idx_images(path: str) -> np.ndarray:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc})") from None
    if len(raw) < 16:
        raise ValueError(f"{path}: too short for an IDX image file ({len(raw)} bytes)")
    magic, n, rows, cols = struct.unpack(">IIII", raw[:16])
    if magic != 2051:
        raise ValueError(f"{path}: not an IDX image file (magic number {magic}, expected 2051)")
    if len(raw) != 16 + n * rows * cols:
        raise ValueError(f"{path}: truncated: header says {n} images of {rows}x{cols} "
                         f"({16 + n * rows * cols} bytes), file has {len(raw)} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows, cols)


def load_mnist_folder(folder: str, image_size: int | None = None) -> TensorDataset:
    """MNIST training images from a local folder holding `train-images-idx3-ubyte[.gz]` (also
    looked for in MNIST/raw/ and raw/, torchvision's layout), scaled to [-1, 1]."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"MNIST folder not found: {folder}")
    tried = []
    for sub in ("", "raw", os.path.join("MNIST", "raw")):
        for name in _MNIST_NAMES:
            for suffix in ("", ".gz"):
                candidate = os.path.join(folder, sub, name + suffix)
                tried.append(candidate)
                if os.path.isfile(candidate):
                    arr = _read_idx_images(candidate)
                    images = _resize(_to_unit_range(arr, 0.0, 255.0).unsqueeze(1), image_size,
                                     candidate)
                    return TensorDataset("mnist", images, "image", 0.0, 255.0)
    raise FileNotFoundError(f"{folder}: no MNIST training images found (looked for "
                            f"{_MNIST_NAMES[0]}[.gz] in {folder}, raw/ and MNIST/raw/)")


class TabularDataset(TensorDataset):
    """A CSV table: numeric columns standardised, categorical columns one-hot encoded.

    `decode_rows` turns model-space rows back into rows with the original columns (numeric columns
    de-standardised, integer columns rounded, categories by argmax of their one-hot block).
    """

    def __init__(self, name: str, columns: List[str], numeric: Dict[str, Tuple[float, float, bool]],
                 categories: Dict[str, List[str]], data: Tensor) -> None:
        super().__init__(name, data, "tabular")
        self.columns = columns
        self.numeric = numeric
        self.categories = categories
        self.spans: List[Tuple[str, int, int]] = []
        pos = 0
        for col in columns:
            width = len(categories[col]) if col in categories else 1
            self.spans.append((col, pos, pos + width))
            pos += width

    @property
    def categorical_spans(self) -> List[Tuple[int, int]]:
        return [(a, b) for col, a, b in self.spans if col in self.categories]

    def decode(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x)

    def decode_rows(self, x: np.ndarray) -> List[List[object]]:
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        out_cols = []
        for col, a, b in self.spans:
            if col in self.categories:
                cats = self.categories[col]
                out_cols.append([cats[i] for i in x[:, a:b].argmax(1)])
            else:
                mean, std, integer = self.numeric[col]
                vals = x[:, a] * std + mean
                out_cols.append([int(round(v)) for v in vals] if integer else vals.tolist())
        return [list(row) for row in zip(*out_cols)]

    def write_csv(self, x: np.ndarray, path: str) -> None:
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(self.columns)
            writer.writerows(self.decode_rows(x))


def _parse_number(s: str) -> float | None:
    """float(s), or None where s is not a number; nan and inf parse (and are refused later)."""
    try:
        return float(s)
    except ValueError:
        return None


def load_tabular_csv(path: str, categorical: Sequence[str] | None = None,
                     max_categories: int = 50) -> TabularDataset:
    """A CSV file with a header row. A column is numeric when every value parses as a finite
    number (unless named in `categorical`), categorical otherwise. Empty cells and non-finite
    values (nan, inf) in a numeric column are an error naming the column and line (fill or drop
    them first, or name the column in `categorical`): such a column is never re-typed as
    categorical behind the user's back. A table needs at least 2 data rows."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CSV file not found: {path}")
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path}: cannot read as CSV ({exc})") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if len(rows) < 2:
        raise ValueError(f"{path}: expected a header row and at least one data row, "
                         f"got {len(rows)} non-empty rows")
    header = [h.strip() for h in rows[0]]
    if len(set(header)) != len(header) or any(not h for h in header):
        raise ValueError(f"{path}: the header must name every column once, got {header}")
    body = rows[1:]
    for i, r in enumerate(body, start=2):
        if len(r) != len(header):
            raise ValueError(f"{path}: line {i} has {len(r)} fields, the header has {len(header)}")
    if len(body) == 1:
        raise ValueError(f"{path}: the table has a single data row; a GAN learns the distribution "
                         f"of many rows (and the metrics compare samples), so give it at least "
                         f"2 data rows")
    forced = set(categorical or ())
    unknown = forced - set(header)
    if unknown:
        raise ValueError(f"{path}: categorical columns {sorted(unknown)} are not in the header "
                         f"{header}")
    numeric: Dict[str, Tuple[float, float, bool]] = {}
    categories: Dict[str, List[str]] = {}
    blocks = []
    for j, col in enumerate(header):
        values = [r[j].strip() for r in body]
        non_empty = [v for v in values if v != ""]
        parsed = [_parse_number(v) for v in non_empty] if col not in forced else [None]
        if non_empty and all(x is not None for x in parsed):
            if len(non_empty) != len(values):
                line = values.index("") + 2
                raise ValueError(f"{path}: numeric column {col!r} has an empty cell on line "
                                 f"{line}; fill or drop missing values first")
            bad = [i for i, x in enumerate(parsed) if not math.isfinite(x)]
            if bad:
                raise ValueError(
                    f"{path}: numeric column {col!r} holds {values[bad[0]]!r} on line "
                    f"{bad[0] + 2} ({len(bad)} non-finite value{'s' if len(bad) > 1 else ''} in "
                    f"all); the model needs finite numbers: fill or drop those rows, or name the "
                    f"column as categorical (--categorical {col}) to treat its values as "
                    f"categories")
            vals = np.array(parsed)
            mean, std = float(vals.mean()), float(vals.std())
            std = std if std > 0 else 1.0
            integer = all(float(v).is_integer() and "." not in v and "e" not in v.lower()
                          for v in values)
            numeric[col] = (mean, std, integer)
            blocks.append(((vals - mean) / std)[:, None])
        else:
            cats = sorted(set(values))
            if len(cats) > max_categories:
                raise ValueError(f"{path}: column {col!r} has {len(cats)} distinct non-numeric "
                                 f"values (more than max_categories={max_categories}); is it an "
                                 f"identifier or free text? Drop it first")
            categories[col] = cats
            index = {c: i for i, c in enumerate(cats)}
            onehot = np.zeros((len(values), len(cats)))
            onehot[np.arange(len(values)), [index[v] for v in values]] = 1.0
            blocks.append(onehot)
    data = torch.from_numpy(np.concatenate(blocks, 1).astype(np.float32))
    return TabularDataset(os.path.basename(path), header, numeric, categories, data)


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

    def state_dict(self) -> Dict[str, Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Dict[str, Tensor]) -> None:
        self.generator.set_state(state["generator"])
