"""Watching a run while it trains: history.csv appended as the logged values are read from the
device (each row flushed to the operating system, so a killed run keeps every row it logged),
TensorBoard event files (`tensorboard`, flushed at the same moments), and the sample grids of
`sample_every` (samples/step_000500.png from fixed latents, samples/real.png once).

The trainer reads its logged values from the device once per `log_every` steps (StyleGAN2-ADA
gathers its statistics on the device and reads them once per tick): `RunLog.append` receives
those steps' rows together.
"""

from __future__ import annotations

import csv
import importlib.util
import math
import os
import warnings
from typing import Dict, List, Sequence, Tuple

from .config import HISTORY_KEYS
from .outputs import history_row, plot_samples, save_image_grid, write_history

__all__ = ["HISTORY_NAME", "SAMPLES_DIR", "TENSORBOARD_DIR", "RunLog", "missing_tensorboard",
           "snapshot_path", "write_sample_grid"]

HISTORY_NAME = "history.csv"
TENSORBOARD_DIR = "tensorboard"
SAMPLES_DIR = "samples"
# TensorBoard's tag of each history column
TAGS = {"loss_c": "loss/critic", "loss_g": "loss/generator", "gp": "penalty",
        "wasserstein": "wasserstein", "grad_norm": "grad_norm", "lr_g": "lr/generator",
        "lr_c": "lr/critic"}


def missing_tensorboard() -> str:
    """'' when TensorBoard's writer can be imported, else the one-line message naming the extra."""
    if importlib.util.find_spec("tensorboard") is not None:
        return ""
    return ("tensorboard (--tensorboard) needs the tensorboard package, which is not installed: "
            "pip install 'wgangp_fast[tensorboard]'")


def snapshot_path(folder: str, step: int | None) -> str:
    """samples/step_000500.png, or samples/real.png for the real data (step None)."""
    name = "real.png" if step is None else f"step_{step:06d}.png"
    return os.path.join(folder, SAMPLES_DIR, name)


def write_sample_grid(folder: str, dataset, samples, step: int, name: str,
                      log: RunLog | None = None) -> str | None:
    """Model-space `samples` (of fixed latents) as folder/samples/step_{step}.png: an image grid
    (torchvision's where installed), else generated points over the real ones, or the table's
    column histograms beside the real ones; with samples None the real data's picture,
    folder/samples/real.png, written once (None where it is there already). Into `log`'s
    TensorBoard too. Returns the path written."""
    path = snapshot_path(folder, None if samples is None else step)
    if samples is None and os.path.exists(path):
        return None
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if dataset.kind == "image":
        images = samples if samples is not None else dataset.reference(64, seed=1)[:64]
        save_image_grid(images, path)
    else:
        title = f"{name}: real data" if samples is None else f"{name}: step {step}"
        plot_samples(dataset, samples, path, title=title)
    if log is not None:
        log.image("real" if samples is None else "samples", path, step)
    return path


class RunLog:
    """The live logs of a run in `folder`. history.csv starts as the run's history so far (a
    resumed run's checkpoint history: rows a killed run logged after its last checkpoint are
    dropped, as the resumed run takes those steps again), then grows by append(); TensorBoard
    hides the events of such steps (purge_step) for the same reason."""

    def __init__(self, folder: str, history: Dict[str, List[float]], *,
                 tensorboard: bool = False) -> None:
        self.folder = folder
        path = os.path.join(folder, HISTORY_NAME)
        write_history(path, history)
        self._file = open(path, "a", newline="")
        self._csv = csv.writer(self._file)
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            step = len(history[HISTORY_KEYS[0]])
            self._tb = SummaryWriter(os.path.join(folder, TENSORBOARD_DIR),
                                     purge_step=step + 1 if step else None)

    def append(self, rows: Sequence[Tuple[int, Dict[str, float]]]) -> None:
        """(step, record) rows: into TensorBoard, then history.csv, each flushed, in that order
        (a row in history.csv is in TensorBoard too). A write that fails (a full disk) ends the
        live logs with a warning, not the run: the checkpoint and the outputs at the end hold
        the whole history."""
        if not rows or self._file.closed:
            return
        if self._tb is not None:
            for step, record in rows:
                for key in HISTORY_KEYS:
                    value = record[key]
                    if math.isfinite(value):
                        self._tb.add_scalar(TAGS[key], value, step)
            self._tb.flush()
        try:
            for step, record in rows:
                self._csv.writerow(history_row(step, record))
            self._file.flush()
        except OSError as exc:
            warnings.warn(f"history.csv in {self.folder} can no longer be written ({exc}); the "
                          f"live logs stop here, the checkpoint keeps the history",
                          RuntimeWarning, stacklevel=2)
            self.close()

    def image(self, tag: str, path: str, step: int) -> None:
        """The picture at `path` (a PNG just written) into TensorBoard under `tag`."""
        if self._tb is None:
            return
        import matplotlib.image

        img = matplotlib.image.imread(path)
        if img.ndim == 2:
            img = img[..., None]
        self._tb.add_image(tag, img[..., :3], step, dataformats="HWC")
        self._tb.flush()

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass  # the write that failed was reported; closing cannot add to it
        if self._tb is not None:
            self._tb.close()
            self._tb = None
