"""Tables: a CSV file read into model-space columns (`TableCodec`) and written back in its own
units, with each column's name and type.

A numeric column is encoded by its `transform`:
- "mode" (the default): CTGAN's mode-specific normalisation (Xu et al., 2019). A Gaussian
  mixture (scikit-learn's GaussianMixture, 1 to 10 modes, as many as the Bayesian information
  criterion picks; CTGAN fits a variational mixture instead) is fitted to the column; each value c
  is given a mode k, drawn with the posterior probability of each mode, and
  becomes the pair (alpha, one-hot k) with alpha = (c - mu_k) / (4 sigma_k) in [-1, 1], held
  in model space as 4 alpha (unit variance within a mode). The generator emits it through 4 tanh
  and k through a Gumbel softmax; decoding takes the argmax mode. Two additions keep a column's support: a column whose values are all positive is
  modelled in log space (decoded values stay > 0 and a right-skewed column keeps its tail), and
  decoded values are clipped to the column's observed range (as SDV's enforce_min_max_values).
- "standard": (c - mean) / std, one model column, decoded without clipping (the encoding before
  "mode"; kept for comparison).
Integer columns are rounded when decoded. A categorical column is one-hot.

What decoding needs (the columns, their types, transforms and modes, the categories) is
`TableCodec.to_dict()`: plain Python values, stored in a run's checkpoint, so that samples can
be decoded without the CSV file, and a resumed run encodes its data exactly as it started.
"""

from __future__ import annotations

import csv
import math
import os
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch

from .base import TensorDataset

__all__ = ["CategoricalColumn", "NumericColumn", "TableCodec", "TableMismatchError",
           "TabularDataset", "load_tabular_csv"]

TRANSFORMS = ("mode", "standard")
# the mixture's settings: at most MAX_MODES modes; a mode with less weight than MIN_MODE_WEIGHT
# is dropped (its values go to the other modes); FIT_ROWS rows at most are used to fit it (a
# random subset, fixed by the seed), which keeps a large table's start short
MAX_MODES = 10
MIN_MODE_WEIGHT = 0.01
FIT_ROWS = 20000
# alpha stays inside tanh's open range, so that every encoded value is one the generator can emit
ALPHA_LIMIT = 0.99
# alpha enters model space times ALPHA_SCALE: (c - mu_k) / sigma_k, unit variance within a mode
# like a standardised column, where CTGAN keeps a quarter of it; the critic then tells spreads
# apart 4 times finer (a log-normal column after 1000 steps, seed 1: its worst 5th / 50th / 95th
# percentile 13% off, against 30% with alpha itself)
ALPHA_SCALE = 4.0


class NumericColumn:
    """One numeric column's encoding. `means` / `stds` / `weights`: the modes (in log space when
    `log`); "standard" has one mode and no one-hot. `decimals`: the most decimal places the
    file's values have (decoded values are rounded to them; None: not rounded)."""

    def __init__(self, name: str, transform: str, integer: bool, low: float, high: float,
                 log: bool, means: Sequence[float], stds: Sequence[float],
                 weights: Sequence[float] | None = None, scale: float = ALPHA_SCALE,
                 decimals: int | None = None) -> None:
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}, got "
                             f"{transform!r}")
        self.name, self.transform, self.integer = name, transform, bool(integer)
        self.low, self.high, self.log = float(low), float(high), bool(log)
        self.means = np.asarray(means, dtype=np.float64)
        self.stds = np.asarray(stds, dtype=np.float64)
        self.weights = (np.full(len(self.means), 1.0 / len(self.means)) if weights is None
                        else np.asarray(weights, dtype=np.float64))
        self.scale = float(scale)
        self.decimals = None if decimals is None else int(decimals)

    @property
    def width(self) -> int:
        return 1 if self.transform == "standard" else 1 + len(self.means)

    @classmethod
    def fit(cls, name: str, values: np.ndarray, integer: bool, transform: str,
            seed: int = 0, decimals: int | None = None) -> NumericColumn:
        values = np.asarray(values, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        if transform == "standard":
            std = float(values.std())
            return cls(name, transform, integer, low, high, False, [float(values.mean())],
                       [std if std > 0 else 1.0], decimals=decimals)
        log = low > 0
        t = np.log(values) if log else values
        means, stds, weights = _fit_modes(t, seed)
        return cls(name, transform, integer, low, high, log, means, stds, weights,
                   decimals=decimals)

    def encode(self, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """[n] values -> [n, width] model-space columns."""
        values = np.asarray(values, dtype=np.float64)
        if self.transform == "standard":
            return ((values - self.means[0]) / self.stds[0])[:, None]
        t = np.log(np.maximum(values, self.low)) if self.log else values
        # each value's mode, drawn from the mixture's posterior over the modes
        logp = (-0.5 * ((t[:, None] - self.means) / self.stds) ** 2 - np.log(self.stds)
                + np.log(self.weights))
        p = np.exp(logp - logp.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        u = rng.random(len(t))[:, None]
        mode = np.minimum((p.cumsum(1) < u).sum(1), len(self.means) - 1)
        alpha = np.clip((t - self.means[mode]) / (4 * self.stds[mode]), -ALPHA_LIMIT,
                        ALPHA_LIMIT)
        out = np.zeros((len(t), self.width))
        out[:, 0] = alpha * self.scale
        out[np.arange(len(t)), 1 + mode] = 1.0
        return out

    def decode(self, block: np.ndarray) -> np.ndarray:
        """[n, width] model-space columns -> [n] values in the column's units."""
        block = np.asarray(block, dtype=np.float64)
        if self.transform == "standard":
            values = block[:, 0] * self.stds[0] + self.means[0]
        else:
            mode = block[:, 1:].argmax(1)
            alpha = np.clip(block[:, 0] / self.scale, -1.0, 1.0)
            t = alpha * 4 * self.stds[mode] + self.means[mode]
            # exp of a value past the float range is inf, then clipped to the observed range
            with np.errstate(over="ignore"):
                values = np.exp(t) if self.log else t
            values = np.clip(values, self.low, self.high)
        if self.integer:
            return np.round(values)
        return values if self.decimals is None else np.round(values, self.decimals)

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "type": "integer" if self.integer else "float",
                "transform": self.transform, "low": self.low, "high": self.high, "log": self.log,
                "means": self.means.tolist(), "stds": self.stds.tolist(),
                "weights": self.weights.tolist(), "scale": self.scale,
                "decimals": self.decimals}


class CategoricalColumn:
    """One categorical column: one-hot over its sorted categories."""

    def __init__(self, name: str, categories: Sequence[str]) -> None:
        self.name = name
        self.categories = [str(c) for c in categories]

    @property
    def width(self) -> int:
        return len(self.categories)

    def encode(self, values: Sequence[str]) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.categories)}
        out = np.zeros((len(values), self.width))
        out[np.arange(len(values)), [index[v] for v in values]] = 1.0
        return out

    def decode(self, block: np.ndarray) -> List[str]:
        return [self.categories[i] for i in np.asarray(block).argmax(1)]

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "type": "category", "categories": list(self.categories)}


def _fit_modes(t: np.ndarray, seed: int) -> Tuple[List[float], List[float], List[float]]:
    """The modes (means, stds, weights) of a Gaussian mixture fitted to the values t, with the
    number of modes (1 to MAX_MODES) that minimises the Bayesian information criterion: one for
    a Gaussian (a log-normal column in log space), two for two bumps, more for flat or lumpy
    columns."""
    distinct = np.unique(t)
    if len(distinct) == 1:
        return [float(distinct[0])], [1.0], [1.0]
    import warnings

    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(seed)
    fit = t if len(t) <= FIT_ROWS else rng.choice(t, FIT_ROWS, replace=False)
    # fitted in standard units, so that the covariance floor means the same for a column of
    # incomes and a column of rates
    centre, scale = float(fit.mean()), float(fit.std())
    z = ((fit - centre) / scale)[:, None]
    best, best_bic, worse = None, math.inf, 0
    for k in range(1, min(MAX_MODES, len(distinct)) + 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fewer distinct clusters than k: BIC says so too
            gm = GaussianMixture(k, random_state=seed).fit(z)
        bic = gm.bic(z)
        if bic < best_bic:
            best, best_bic, worse = gm, bic, 0
        else:
            worse += 1
            if worse == 2:  # two more modes that do not pay for themselves: stop looking
                break
    keep = best.weights_ > MIN_MODE_WEIGHT
    means = best.means_[keep, 0] * scale + centre
    stds = np.maximum(np.sqrt(best.covariances_[keep].reshape(-1)) * scale, 1e-12)
    weights = best.weights_[keep] / best.weights_[keep].sum()
    order = np.argsort(means)
    return means[order].tolist(), stds[order].tolist(), weights[order].tolist()


class TableCodec:
    """A table's columns and their encodings: rows of values <-> model-space rows.

    spans: (column, start, end) of each column's model-space block. categorical_spans: the
    one-hot blocks (categories and modes), which the generator emits through a Gumbel softmax;
    tanh_columns: the alpha columns of mode-normalised numeric columns, emitted through
    tanh_scale * tanh.
    """

    def __init__(self, columns: Sequence[NumericColumn | CategoricalColumn]) -> None:
        self.columns = list(columns)
        self.spans: List[Tuple[str, int, int]] = []
        self.categorical_spans: List[Tuple[int, int]] = []
        self.tanh_columns: List[int] = []
        scales = {c.scale for c in self.columns
                  if isinstance(c, NumericColumn) and c.transform == "mode"}
        if len(scales) > 1:
            raise ValueError(f"the mode-normalised columns must share one scale, got {scales}")
        self.tanh_scale = scales.pop() if scales else ALPHA_SCALE
        pos = 0
        for col in self.columns:
            self.spans.append((col.name, pos, pos + col.width))
            if isinstance(col, CategoricalColumn):
                self.categorical_spans.append((pos, pos + col.width))
            elif col.transform == "mode":
                self.tanh_columns.append(pos)
                self.categorical_spans.append((pos + 1, pos + col.width))
            pos += col.width
        self.width = pos

    @property
    def names(self) -> List[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> NumericColumn | CategoricalColumn:
        return self.columns[self.names.index(name)]

    def encode(self, values: Dict[str, Sequence], seed: int = 0) -> np.ndarray:
        """{column: values} -> [n, width] model-space rows; the modes are drawn with `seed`."""
        rng = np.random.default_rng(seed)
        blocks = [col.encode(values[col.name]) if isinstance(col, CategoricalColumn)
                  else col.encode(np.asarray(values[col.name], dtype=np.float64), rng)
                  for col in self.columns]
        return np.concatenate(blocks, 1)

    def decode(self, x: np.ndarray) -> Dict[str, Any]:
        """[n, width] model-space rows -> {column: values in its own units} (numeric columns as
        float arrays, integer ones rounded; categorical ones as lists of strings)."""
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        if x.shape[1] != self.width:
            raise ValueError(f"expected rows of {self.width} model-space values, got "
                             f"{x.shape[1]}")
        return {col.name: col.decode(x[:, a:b]) for col, (_, a, b) in zip(self.columns, self.spans)}

    def decode_rows(self, x: np.ndarray) -> List[List[object]]:
        """Model-space rows -> rows of Python values (int for integer columns)."""
        decoded = self.decode(x)
        cols = []
        for col in self.columns:
            values = decoded[col.name]
            if isinstance(col, NumericColumn):
                values = [int(v) for v in values] if col.integer else values.tolist()
            cols.append(values)
        return [list(row) for row in zip(*cols)]

    def write_csv(self, x: np.ndarray, path_or_file, header: bool = True) -> None:
        """Write model-space rows as CSV in the table's own units (to a path, or appended to an
        open text file, with or without the header row)."""
        if isinstance(path_or_file, (str, os.PathLike)):
            with open(path_or_file, "w", newline="") as f:
                self.write_csv(x, f, header)
            return
        writer = csv.writer(path_or_file)
        if header:
            writer.writerow(self.names)
        writer.writerows(self.decode_rows(x))

    def to_dict(self) -> Dict[str, Any]:
        return {"columns": [c.to_dict() for c in self.columns]}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> TableCodec:
        columns: List[NumericColumn | CategoricalColumn] = []
        for c in d["columns"]:
            if c["type"] == "category":
                columns.append(CategoricalColumn(c["name"], c["categories"]))
            else:
                columns.append(NumericColumn(c["name"], c["transform"], c["type"] == "integer",
                                             c["low"], c["high"], c["log"], c["means"],
                                             c["stds"], c.get("weights"),
                                             c.get("scale", ALPHA_SCALE), c.get("decimals")))
        return cls(columns)


class TabularDataset(TensorDataset):
    """A CSV table: its rows encoded by a `TableCodec` (model space), and its own values (`raw`,
    {column: values}) for pictures and metrics in the columns' units."""

    def __init__(self, name: str, codec: TableCodec, data: torch.Tensor,
                 raw: Dict[str, Any] | None = None) -> None:
        super().__init__(name, data, "tabular")
        self.codec = codec
        self.raw = raw or {}

    @property
    def columns(self) -> List[str]:
        return self.codec.names

    @property
    def categories(self) -> Dict[str, List[str]]:
        return {c.name: c.categories for c in self.codec.columns
                if isinstance(c, CategoricalColumn)}

    @property
    def numeric(self) -> Dict[str, NumericColumn]:
        return {c.name: c for c in self.codec.columns if isinstance(c, NumericColumn)}

    @property
    def spans(self) -> List[Tuple[str, int, int]]:
        return self.codec.spans

    @property
    def categorical_spans(self) -> List[Tuple[int, int]]:
        return self.codec.categorical_spans

    @property
    def tanh_columns(self) -> List[int]:
        return self.codec.tanh_columns

    @property
    def tanh_scale(self) -> float:
        return self.codec.tanh_scale

    def decode(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x)

    def decode_rows(self, x: np.ndarray) -> List[List[object]]:
        return self.codec.decode_rows(x)

    def write_csv(self, x: np.ndarray, path: str) -> None:
        self.codec.write_csv(x, path)


def _parse_number(s: str) -> float | None:
    """float(s), or None where s is not a number; nan and inf parse (and are refused later)."""
    try:
        return float(s)
    except ValueError:
        return None


def _decimals(values: Sequence[str]) -> int | None:
    """The most decimal places of a column's numbers as written (None where one is written in
    scientific notation: its precision is not in its decimals)."""
    most = 0
    for v in values:
        if "e" in v.lower():
            return None
        if "." in v:
            most = max(most, len(v.split(".", 1)[1]))
    return most


def _read_table(path: str, categorical: Sequence[str] | None, max_categories: int
                ) -> Tuple[List[str], Dict[str, Any], Dict[str, Tuple[bool, int | None]]]:
    """(header, {column: float array or list of strings}, {numeric column: (integer?,
    decimals)})."""
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
    values_of: Dict[str, Any] = {}
    integer_of: Dict[str, Tuple[bool, int | None]] = {}
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
            values_of[col] = np.array(parsed)
            integer = all(float(v).is_integer() and "." not in v and "e" not in v.lower()
                          for v in values)
            integer_of[col] = (integer, _decimals(values))
        else:
            distinct = set(values)
            if len(distinct) > max_categories:
                raise ValueError(f"{path}: column {col!r} has {len(distinct)} distinct "
                                 f"non-numeric values (more than max_categories="
                                 f"{max_categories}); is it an identifier or free text? Drop it "
                                 f"first")
            values_of[col] = values
    return header, values_of, integer_of


def load_tabular_csv(path: str, categorical: Sequence[str] | None = None,
                     max_categories: int = 50, *, transform: str = "mode",
                     codec: TableCodec | Dict[str, Any] | None = None) -> TabularDataset:
    """A CSV file with a header row. A column is numeric when every value parses as a finite
    number (unless named in `categorical`), categorical otherwise. Empty cells and non-finite
    values (nan, inf) in a numeric column are an error naming the column and line (fill or drop
    them first, or name the column in `categorical`): such a column is never re-typed as
    categorical behind the user's back. A table needs at least 2 data rows.

    Numeric columns are encoded by `transform` ("mode" or "standard", see the module's notes);
    `codec` (a TableCodec or its to_dict(), from a checkpoint) encodes with that instead of a new
    fit, after checking that the file has its columns and types."""
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}")
    header, values_of, integer_of = _read_table(path, categorical, max_categories)
    if isinstance(codec, dict):
        codec = TableCodec.from_dict(codec)
    if codec is None:
        columns: List[NumericColumn | CategoricalColumn] = []
        for col in header:
            if col in integer_of:
                integer, decimals = integer_of[col]
                columns.append(NumericColumn.fit(col, values_of[col], integer, transform,
                                                 decimals=decimals))
            else:
                columns.append(CategoricalColumn(col, sorted(set(values_of[col]))))
        codec = TableCodec(columns)
    else:
        _check_against(codec, header, values_of, integer_of, path)
    data = torch.from_numpy(codec.encode(values_of).astype(np.float32))
    return TabularDataset(os.path.basename(path), codec, data, values_of)


class TableMismatchError(ValueError):
    """The CSV file no longer has the columns, types or categories of the codec it is encoded
    with (a checkpoint's)."""


def _check_against(codec: TableCodec, header: List[str], values_of: Dict[str, Any],
                   integer_of: Dict[str, Any], path: str) -> None:
    """The file read now has the codec's columns, each of its type and categories."""
    if header != codec.names:
        raise TableMismatchError(f"its columns were {codec.names} and are now {header}")
    for col in codec.columns:
        if isinstance(col, CategoricalColumn):
            if col.name in integer_of:
                raise TableMismatchError(f"column {col.name!r} was categorical and now holds "
                                         f"numbers only")
            now = sorted(set(values_of[col.name]))
            if not set(now) <= set(col.categories):
                added = sorted(set(now) - set(col.categories))
                removed = sorted(set(col.categories) - set(now))
                raise TableMismatchError(
                    f"column {col.name!r} had the categories {col.categories} and now has "
                    f"{now} (added {added}, removed {removed}), which changes the models' input "
                    f"and output width")
        elif col.name not in integer_of:
            raise TableMismatchError(f"column {col.name!r} was numeric and now holds text")
