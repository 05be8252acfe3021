"""What a conditional run writes besides the outputs of every run: samples_labels.npy (the class
of each row of samples.npy); for images, classes/<k>-<name>.png, an 8x8 grid of each class from
the run's fixed noise (all drawn by WGANGPTrainer.generate_samples); for tables, samples.csv
with the class column added."""

from __future__ import annotations

import csv
import os
import re

import numpy as np
import torch

from . import data as data_mod
from .outputs import _pyplot, image_canvas

__all__ = ["class_file_name", "safe_class_name", "write_class_outputs", "write_labelled_csv"]


def safe_class_name(name: str) -> str:
    """A class name reduced to safe file-name characters."""
    return (re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "class")[:60]


def class_file_name(index: int, name: str) -> str:
    """'3-cat.png': the class index, then its name reduced to safe file-name characters."""
    return f"{index}-{safe_class_name(name)}.png"


def write_labelled_csv(path: str, dataset, names, parts) -> None:
    """A table's samples in its own units with its class column (the run's --label-column, else
    "label") holding each row's class name; `parts` yields (samples in model space, class
    indices) a batch at a time."""
    column = getattr(dataset, "label_column", None) or "label"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(list(dataset.codec.names) + [column])
        for x, labels in parts:
            writer.writerows(row + [names[k]] for row, k in
                             zip(dataset.codec.decode_rows(x), labels))


def write_class_outputs(trainer, folder: str, samples: np.ndarray, labels: np.ndarray) -> None:
    names = trainer.class_names
    np.save(os.path.join(folder, "samples_labels.npy"), labels.astype(np.int64))
    dataset = trainer.dataset
    if isinstance(dataset, data_mod.TabularDataset):
        write_labelled_csv(os.path.join(folder, "samples.csv"), dataset, names,
                           [(samples, labels)])
        return
    if dataset.kind != "image":
        return
    out = os.path.join(folder, "classes")
    os.makedirs(out, exist_ok=True)
    plt = _pyplot()
    noise = trainer.fixed_noise
    for k, name in enumerate(names):
        imgs = trainer.generate_samples(noise=noise, labels=torch.full((len(noise),), k)).numpy()
        canvas = image_canvas(imgs, 8)
        fig, ax = plt.subplots(figsize=(5, 5.3))
        c = imgs.shape[1]
        ax.imshow(canvas[..., 0] if c == 1 else canvas, cmap="gray" if c == 1 else None,
                  vmin=0, vmax=1, interpolation="nearest")
        ax.axis("off")
        ax.set_title(f"class {k}: {name} (step {trainer.step})", fontsize=9)
        fig.tight_layout()
        fig.savefig(os.path.join(out, class_file_name(k, name)), dpi=110)
        plt.close(fig)
