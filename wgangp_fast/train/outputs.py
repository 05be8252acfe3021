"""What a run writes besides its checkpoint: samples.npy (and samples.csv for tables),
metrics.json, config.json, history.csv and the pictures curves.png and samples.png."""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Any, Dict, List

import numpy as np

from . import data as data_mod
from .config import HISTORY_KEYS, WGANGPConfig

__all__ = ["plot_curves", "plot_samples", "summarise_history", "write_outputs"]


def summarise_history(history: Dict[str, List[float]]) -> Dict[str, float]:
    """final_wasserstein_estimate and final_gp: the means of the last 100 finite values (fp16
    steps the scaler skipped may have logged an inf penalty: left out)."""
    summary = {}
    for key, name in (("wasserstein", "final_wasserstein_estimate"), ("gp", "final_gp")):
        tail = [v for v in history[key][-100:] if math.isfinite(v)]
        if tail:
            summary[name] = float(np.mean(tail))
    return summary


def write_outputs(folder: str, *, dataset: data_mod.Dataset, config: WGANGPConfig,
                  history: Dict[str, List[float]], samples: np.ndarray, grid: np.ndarray,
                  metrics: Dict[str, Any], step: int,
                  grid_rows: List[str] | None = None) -> None:
    """Write every output of a run into `folder` (which exists): `samples` in model space,
    `grid` the samples of the fixed noise, `metrics` as they go into metrics.json; `grid_rows`
    names the grid's rows (a conditional run's classes, one row each)."""
    np.save(os.path.join(folder, "samples.npy"), dataset.decode(samples))
    if isinstance(dataset, data_mod.TabularDataset):
        dataset.write_csv(samples, os.path.join(folder, "samples.csv"))
    with open(os.path.join(folder, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config.to_dict(), f, indent=2)
    with open(os.path.join(folder, "history.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("step",) + HISTORY_KEYS)
        for i, row in enumerate(zip(*(history[k] for k in HISTORY_KEYS)), start=1):
            writer.writerow((i,) + tuple(f"{v:.6g}" for v in row))
    plot_curves(history, os.path.join(folder, "curves.png"),
                title=f"{config.dataset} / {config.method}")
    plot_samples(dataset, samples, grid, os.path.join(folder, "samples.png"),
                 title=f"{config.dataset}: step {step}", rows=grid_rows)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: Dict[str, List[float]], path: str, title: str = "") -> None:
    """Wasserstein estimate and gradient penalty against the generator step."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    steps = np.arange(1, len(history["wasserstein"]) + 1)
    for ax, key, label, color in ((axes[0], "wasserstein", "W estimate E[D(real)] - E[D(fake)]",
                                   "tab:blue"),
                                  (axes[1], "gp", "gradient penalty (lambda * E[...])",
                                   "tab:orange")):
        values = np.asarray(history[key], dtype=np.float64)
        ax.plot(steps, values, color=color, alpha=0.3, linewidth=0.8)
        if len(values) >= 20:
            k = max(5, len(values) // 50)
            smooth = np.convolve(values, np.ones(k) / k, mode="valid")
            ax.plot(steps[k - 1:], smooth, color=color, linewidth=1.6)
        ax.set_xlabel("generator step")
        ax.set_title(label, fontsize=10)
        ax.grid(True, alpha=0.3)
    _save(fig, path, title)


def image_canvas(imgs: np.ndarray, columns: int) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> one [rows * (H + 1) + 1, columns * (W + 1) + 1, C] picture in
    [0, 1], white between the images."""
    imgs = (np.clip(imgs, -1, 1) + 1) / 2
    c, h, w = imgs.shape[1:]
    rows = int(math.ceil(len(imgs) / columns))
    canvas = np.ones((rows * (h + 1) + 1, columns * (w + 1) + 1, c))
    for i, img in enumerate(imgs):
        r, q = divmod(i, columns)
        canvas[1 + r * (h + 1): 1 + r * (h + 1) + h,
               1 + q * (w + 1): 1 + q * (w + 1) + w] = img.transpose(1, 2, 0)
    return canvas


def plot_samples(dataset: data_mod.Dataset, samples: np.ndarray, grid: np.ndarray, path: str,
                 title: str = "", rows: List[str] | None = None) -> None:
    """Images: an 8x8 grid from the fixed noise (with `rows`: one row per named class).
    2-D points: generated over real samples. Tables: real vs generated marginals of the first
    columns."""
    plt = _pyplot()
    if dataset.kind == "image":
        columns = len(grid) // len(rows) if rows else int(math.ceil(math.sqrt(len(grid))))
        canvas = image_canvas(grid, columns)
        c, h = grid.shape[1], grid.shape[2]
        height = 6 if not rows else max(3.0, 6 * canvas.shape[0] / canvas.shape[1])
        fig, ax = plt.subplots(figsize=(6 + (1.2 if rows else 0), height))
        ax.imshow(canvas[..., 0] if c == 1 else canvas, cmap="gray" if c == 1 else None,
                  vmin=0, vmax=1, interpolation="nearest")
        if rows:
            ax.set_xticks([])
            ax.set_yticks([1 + r * (h + 1) + h / 2 for r in range(len(rows))])
            ax.set_yticklabels(rows, fontsize=8)
            ax.tick_params(length=0)
            for side in ax.spines.values():
                side.set_visible(False)
        else:
            ax.axis("off")
    elif isinstance(dataset, data_mod.TabularDataset):
        cols = dataset.spans[:6]
        fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 3), squeeze=False)
        real = dataset.data.numpy()
        for ax, (col, a, b) in zip(axes[0], cols):
            if col in dataset.categories:
                idx = np.arange(b - a)
                ax.bar(idx - 0.2, real[:, a:b].mean(0), 0.4, label="real")
                ax.bar(idx + 0.2, np.bincount(samples[:, a:b].argmax(1), minlength=b - a)
                       / len(samples), 0.4, label="generated")
                ax.set_xticks(idx)
                ax.set_xticklabels(dataset.categories[col], rotation=45, fontsize=7)
            else:
                ax.hist(real[:, a], bins=40, density=True, alpha=0.5, label="real")
                ax.hist(samples[:, a], bins=40, density=True, alpha=0.5, label="generated")
            ax.set_title(col, fontsize=9)
        axes[0][0].legend(fontsize=7)
    else:
        x = samples.reshape(len(samples), -1)
        real = dataset.reference(len(x), seed=1).reshape(len(x), -1)
        fig, ax = plt.subplots(figsize=(5.5, 5.5))
        ax.scatter(real[:, 0], real[:, 1], s=3, c="0.6", alpha=0.5, label="real")
        ax.scatter(x[:, 0], x[:, 1], s=3, c="tab:red", alpha=0.5, label="generated")
        if hasattr(dataset, "centers"):
            ax.scatter(dataset.centers[:, 0], dataset.centers[:, 1], marker="x", c="k", s=30,
                       label="mode centres")
        ax.set_aspect("equal")
        ax.legend(loc="upper right", fontsize=8, markerscale=3)
        ax.grid(True, alpha=0.3)
    _save(fig, path, title)


def _save(fig, path: str, title: str) -> None:
    plt = _pyplot()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
