"""What a run writes besides its checkpoint: samples.npy (and samples.csv for tables),
metrics.json, config.json, history.csv and the pictures curves.png and samples.png; and the
pictures of its samples in the data's own units (image grids, point clouds over the real data,
a table's column histograms), which the sample grids of a live run and `wgangp-fast sample`
draw too.

Samples in the data's own format: images as uint8 pixels [N, H, W, C] (0..255, the run's value
range mapped onto it), tables as CSV rows with the columns' names and types, points as they are.
"""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Any, Dict, List, Tuple

import numpy as np

from . import data as data_mod
from .config import HISTORY_KEYS, WGANGPConfig

__all__ = ["history_row", "image_bytes", "image_canvas", "plot_curves", "plot_samples",
           "save_image_grid", "summarise_history", "write_history", "write_outputs"]


def history_row(step: int, record: Dict[str, float]) -> Tuple:
    """One history.csv row: the step, then each HISTORY_KEYS value to 6 significant digits."""
    return (step,) + tuple(f"{record[k]:.6g}" for k in HISTORY_KEYS)


def write_history(path: str, history: Dict[str, List[float]]) -> None:
    """history.csv (rewritten whole; wgangp_fast.train.logs.RunLog appends to it while a run
    trains): a header, then one row per generator step (1-based), every HISTORY_KEYS
    column (nan where a value was not measured)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("step",) + HISTORY_KEYS)
        n = len(history[HISTORY_KEYS[0]])
        for i in range(n):
            writer.writerow(history_row(i + 1, {k: history[k][i] for k in HISTORY_KEYS}))


def summarise_history(history: Dict[str, List[float]]) -> Dict[str, float]:
    """final_wasserstein_estimate and final_gp: the means of the last 100 finite values (fp16
    steps the scaler skipped may have logged an inf penalty: left out)."""
    summary = {}
    for key, name in (("wasserstein", "final_wasserstein_estimate"), ("gp", "final_gp")):
        tail = [v for v in history[key][-100:] if math.isfinite(v)]
        if tail:
            summary[name] = float(np.mean(tail))
    return summary


def image_bytes(x: np.ndarray) -> np.ndarray:
    """Images in model space ([N, C, H, W] in [-1, 1]) -> uint8 pixels [N, H, W, C]."""
    x = np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0)
    return np.rint((x + 1.0) * 127.5).astype(np.uint8).transpose(0, 2, 3, 1)


def write_outputs(folder: str, *, dataset: data_mod.Dataset, config: Dict[str, Any] | WGANGPConfig,
                  history: Dict[str, List[float]], samples: np.ndarray, grid: np.ndarray,
                  metrics: Dict[str, Any], step: int, grid_rows: List[str] | None = None) -> None:
    """Write every output of a run into `folder` (which exists): `samples` in model space,
    `grid` the samples of the fixed noise, `metrics` as they go into metrics.json, `config` the
    run's settings (a dict, or a WGANGPConfig); `grid_rows` names the grid's rows (a conditional
    run's classes, one row each)."""
    if isinstance(config, WGANGPConfig):
        config = config.to_dict()
    if dataset.kind == "image":
        np.save(os.path.join(folder, "samples.npy"), image_bytes(samples))
    else:
        np.save(os.path.join(folder, "samples.npy"), dataset.decode(samples))
    if data_mod.is_table(dataset):
        dataset.codec.write_csv(samples, os.path.join(folder, "samples.csv"))
    with open(os.path.join(folder, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    write_history(os.path.join(folder, "history.csv"), history)
    plot_curves(history, os.path.join(folder, "curves.png"),
                title=f"{config['dataset']} / {config['method']}")
    plot_samples(dataset, samples if dataset.kind != "image" else grid,
                 os.path.join(folder, "samples.png"), title=f"{config['dataset']}: step {step}",
                 rows=grid_rows)


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


# image grids smaller than this (8x8 digits make an 82-pixel grid) are enlarged by a whole
# factor, each pixel a block, so that a picture viewer shows them at a readable size
MIN_GRID_PIXELS = 256


def save_image_grid(images: np.ndarray, path: str, nrow: int = 8) -> None:
    """Images in model space ([N, C, H, W] in [-1, 1]) as one PNG grid, nrow to a row with
    2-pixel gaps: torchvision's make_grid / save_image where torchvision is installed, else the
    same layout written by matplotlib. A grid under MIN_GRID_PIXELS on its longer side is
    enlarged k times (nearest neighbour)."""
    images = np.clip(np.asarray(images, dtype=np.float32), -1.0, 1.0)
    try:
        import torch
        import torchvision.utils as tvu
    except ImportError:
        tvu = None
    if tvu is not None:
        grid = tvu.make_grid(torch.from_numpy(images), nrow=nrow, normalize=True,
                             value_range=(-1, 1))
        k = _enlargement(grid.shape[1:])
        tvu.save_image(grid.repeat_interleave(k, 1).repeat_interleave(k, 2), path)
        return
    n, c, h, w = images.shape
    cols = min(nrow, n)
    rows = int(math.ceil(n / cols))
    pad = 2
    canvas = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), dtype=np.float32)
    pixels = (images + 1.0) / 2.0
    if c == 1:
        pixels = np.repeat(pixels, 3, axis=1)
    for i, img in enumerate(pixels[:, :3]):
        r, q = divmod(i, cols)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h,
               pad + q * (w + pad): pad + q * (w + pad) + w] = img.transpose(1, 2, 0)
    k = _enlargement(canvas.shape[:2])
    _pyplot().imsave(path, canvas.repeat(k, 0).repeat(k, 1))


def _enlargement(shape) -> int:
    return max(1, math.ceil(MIN_GRID_PIXELS / max(shape)))


def plot_samples(dataset: data_mod.Dataset, generated: np.ndarray | None, path: str,
                 title: str = "", real: bool = True, rows: List[str] | None = None) -> None:
    """A picture of model-space samples in the data's own units. Images: an 8x8 grid (with
    `generated` None: of real images; with `rows`, one row per named class). 2-D points: generated over real samples. Tables: real and
    generated histograms (numeric columns, in the column's units) and category shares of the
    first six columns. `real` False leaves the real data out (a run rebuilt from its checkpoint
    has none)."""
    if dataset.kind == "image":
        if generated is None:
            generated = dataset.reference(64, seed=1)[:64]
        _plot_image_grid(generated if rows else generated[:64], path, title, rows)
    elif data_mod.is_table(dataset):
        _plot_table(dataset, generated, path, title, real)
    else:
        _plot_points(dataset, generated, path, title, real)


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


def _plot_image_grid(images: np.ndarray, path: str, title: str,
                     rows: List[str] | None = None) -> None:
    plt = _pyplot()
    columns = len(images) // len(rows) if rows else int(math.ceil(math.sqrt(len(images))))
    canvas = image_canvas(images, columns)
    c, h = images.shape[1], images.shape[2]
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
    _save(fig, path, title)


def _plot_points(dataset, generated, path: str, title: str, real: bool) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    n = len(generated) if generated is not None else 1000
    if real:
        ref = dataset.reference(n, seed=1).reshape(n, -1)
        ax.scatter(ref[:, 0], ref[:, 1], s=3, c="0.6", alpha=0.5, label="real")
    if generated is not None:
        x = dataset.decode(generated).reshape(len(generated), -1)
        ax.scatter(x[:, 0], x[:, 1], s=3, c="tab:red", alpha=0.5, label="generated")
    if hasattr(dataset, "centers"):
        ax.scatter(dataset.centers[:, 0], dataset.centers[:, 1], marker="x", c="k", s=30,
                   label="mode centres")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8, markerscale=3)
    ax.grid(True, alpha=0.3)
    _save(fig, path, title)


def _plot_table(dataset, generated, path: str, title: str, real: bool) -> None:
    plt = _pyplot()
    codec = dataset.codec
    cols = codec.columns[:6]
    fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 3), squeeze=False)
    raw = getattr(dataset, "raw", {}) if real else {}
    fake = codec.decode(generated) if generated is not None else {}
    for ax, col in zip(axes[0], cols):
        shown = [(label, values[col.name]) for label, values in (("real", raw), ("generated", fake))
                 if col.name in values]
        if hasattr(col, "categories"):
            idx = np.arange(len(col.categories))
            width = 0.8 / max(len(shown), 1)
            for i, (label, values) in enumerate(shown):
                index = {c: j for j, c in enumerate(col.categories)}
                counts = np.bincount([index[v] for v in values], minlength=len(idx))
                ax.bar(idx + (i - (len(shown) - 1) / 2) * width, counts / len(values), width,
                       label=label)
            ax.set_xticks(idx)
            ax.set_xticklabels(col.categories, rotation=45, fontsize=7)
        else:
            both = np.concatenate([np.asarray(v, dtype=np.float64) for _, v in shown]) \
                if shown else np.zeros(1)
            edges = np.histogram_bin_edges(both, bins=40)
            if getattr(col, "integer", False) and both.max() - both.min() <= 80:
                # one bin per integer: 40 bins over 62 ages would alternate 1 and 2 values
                edges = np.arange(both.min() - 0.5, both.max() + 1.5)
            for label, values in shown:
                ax.hist(values, bins=edges, density=True, alpha=0.5, label=label)
        ax.set_title(col.name, fontsize=9)
    axes[0][0].legend(fontsize=7)
    _save(fig, path, title)


def _save(fig, path: str, title: str) -> None:
    plt = _pyplot()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
