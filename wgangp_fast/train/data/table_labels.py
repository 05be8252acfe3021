"""A CSV table with a class column (`--label-column NAME`): the column's values become the
labels of a conditional run (class names: its distinct values, sorted), and the other columns
the table the models learn, read by tables.load_tabular_csv as any table is."""

from __future__ import annotations

import csv
import os
import tempfile
from typing import Sequence

import numpy as np

from .tables import TabularDataset, load_tabular_csv

__all__ = ["load_labelled_csv"]


def load_labelled_csv(path: str, label_column: str,
                      categorical: Sequence[str] | None = None,
                      max_classes: int = 1000, transform: str = "mode",
                      codec=None) -> TabularDataset:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CSV file not found: {path}")
    try:
        with open(path, newline="") as f:
            rows = [r for r in csv.reader(f)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path}: cannot read as CSV ({exc})") from None
    numbered = [(i, r) for i, r in enumerate(rows, start=1) if any(c.strip() for c in r)]
    if not numbered:
        raise ValueError(f"{path}: the file holds no rows")
    header = [h.strip() for h in numbered[0][1]]
    if label_column not in header:
        raise ValueError(f"--label-column {label_column!r} is not a column of {path} (columns: "
                         f"{', '.join(header)})")
    j = header.index(label_column)
    if len(header) == 1:
        raise ValueError(f"{path}: --label-column {label_column!r} is its only column; the "
                         f"table needs other columns to learn")
    labels_text, kept = [], [header[:j] + header[j + 1:]]
    for line, r in numbered[1:]:
        if len(r) != len(header):
            raise ValueError(f"{path}: line {line} has {len(r)} fields, the header has "
                             f"{len(header)}")
        value = r[j].strip()
        rest = r[:j] + r[j + 1:]
        if not value:
            raise ValueError(f"{path}: line {line} has no value in the label column "
                             f"{label_column!r}; fill or drop that row")
        if not any(c.strip() for c in rest):
            raise ValueError(f"{path}: line {line} holds a label and nothing else")
        labels_text.append(value)
        kept.append(rest)
    names = sorted(set(labels_text))
    if len(names) > max_classes:
        raise ValueError(f"{path}: the label column {label_column!r} has {len(names)} distinct "
                         f"values (more than {max_classes}); is it an identifier?")
    index = {n: k for k, n in enumerate(names)}
    with tempfile.TemporaryDirectory(prefix="wgangp_fast_table_") as tmp:
        table = os.path.join(tmp, os.path.basename(path))
        with open(table, "w", newline="") as f:
            csv.writer(f).writerows(kept)
        try:
            dataset = load_tabular_csv(table, [c for c in (categorical or ())
                                               if c != label_column],
                                       transform=transform, codec=codec)
        except ValueError as exc:
            raise ValueError(str(exc).replace(table, f"{path} (without its label column)")
                             ) from None
    dataset.labels = np.asarray([index[v] for v in labels_text], dtype=np.int64)
    dataset.class_names = names
    dataset.label_column = label_column
    return dataset
