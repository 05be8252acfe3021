"""Tables: a CSV file read into numeric (standardised) and categorical (one-hot) columns, and
written back in its own units."""

from __future__ import annotations

import csv
import math
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from .base import TensorDataset

__all__ = ["TabularDataset", "load_tabular_csv"]


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


