"""Samples from a trained run, in the data's own units and format: `sample(...)`, and the
command `wgangp-fast sample RUN_OR_CHECKPOINT -n N --out PATH`.

    from wgangp_fast.train import sample
    sample("runs/ring8", 10000, "ring8.npy", seed=0)        # points: [N, 2] float32
    sample("runs/digits", 64, "digits.png")                 # images: one grid picture
    sample("runs/table", 100000, "synthetic.csv")           # tables: the CSV's columns

It needs the checkpoint alone: what decoding needs (a table's columns, types and encodings, an
image's shape) is stored in it, so the run's data file need not be there. Samples come from the
averaged generator where the run kept one (ema=False: the trained weights), generated `batch_size`
at a time and written as they come, so N is not bounded by memory.

Formats, by `format` or else by the suffix of `out`:
- "npy" (.npy): images as uint8 pixels [N, H, W, C], points as float32 [N, D];
- "csv" (.csv): a table's rows with its header, integer columns as integers;
- "png" (a folder, no suffix): images, one PNG file each (000000.png, ...);
- "grid" (.png): one picture: an image grid (8 to a row, at most 4096 images), a point cloud, or
  a table's column histograms.
The latents come from a torch.Generator seeded with `seed`, in fixed chunks, so the first N
samples of a run and seed are the same whatever N and batch_size (a table's categories, drawn
through the Gumbel softmax, also depend on batch_size).

Conditional runs (--conditional): `label` (a class name or index) draws every sample of that
class; without it each sample's class is drawn at the data's class frequencies (from a generator
seeded with `seed` too) and written beside the samples: a `<out>_labels.npy` of class indices
for .npy, the run's class column for .csv, one subfolder per class for a folder of PNG files
(the layout `--images` reads back); `classes` in the returned dict with out None.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, List

import numpy as np
import torch

from . import data as data_mod
from . import outputs as outputs_mod
from .class_outputs import safe_class_name, write_labelled_csv
from .folder import CHECKPOINT_NAME

__all__ = ["FORMATS", "sample", "sample_format", "checkpoint_of"]

FORMATS = ("npy", "csv", "png", "grid")
# the formats each kind of data can be written in
KIND_FORMATS = {"image": ("npy", "png", "grid"), "points": ("npy", "grid"),
                "tabular": ("csv", "grid")}
MAX_GRID_IMAGES = 4096
# latents are drawn NOISE_CHUNK rows at a time, whatever the batch size
NOISE_CHUNK = 1024


def checkpoint_of(source: str) -> str:
    """The checkpoint a run folder holds (folder/checkpoint.pt), or `source` if it is a file."""
    if os.path.isdir(source):
        path = os.path.join(source, CHECKPOINT_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{source}: a folder without a {CHECKPOINT_NAME} (is it a "
                                    f"run's output folder?)")
        return path
    if not os.path.isfile(source):
        raise FileNotFoundError(f"no run folder or checkpoint at {source}")
    return source


def sample_format(out: str, kind: str, format: str | None = None) -> str:
    """The format samples of `kind` data are written to `out` in: `format`, else by out's
    suffix (.npy, .csv, .png; no suffix: a folder of PNG files). A ValueError where the kind
    has no such format."""
    if format is None:
        suffix = os.path.splitext(out.rstrip("/\\"))[1].lower()
        format = {".npy": "npy", ".csv": "csv", ".png": "grid", "": "png"}.get(suffix)
        if format is None:
            raise ValueError(f"--out {out}: cannot tell the format from the suffix {suffix!r} "
                             f"(.npy, .csv, .png, or a folder without one); or pass --format")
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    allowed = KIND_FORMATS.get(kind, ("npy",))
    if format not in allowed:
        shown = {"npy": ".npy", "csv": ".csv", "grid": ".png", "png": "a folder"}
        raise ValueError(f"{kind} samples are written as {' or '.join(shown[f] for f in allowed)}"
                         f" (--format {' / '.join(allowed)}), not {format} (--out {out})")
    return format


def _latents(seed: int, latent_dim: int, n: int, batch: int) -> Iterator[torch.Tensor]:
    """n latents in batches of `batch`, drawn in chunks of NOISE_CHUNK from one generator."""
    g = torch.Generator().manual_seed(int(seed))
    buffered: List[torch.Tensor] = []
    held = 0
    done = 0
    while done < n:
        want = min(batch, n - done)
        while held < want:
            buffered.append(torch.randn(NOISE_CHUNK, latent_dim, generator=g))
            held += NOISE_CHUNK
        pool = torch.cat(buffered)
        yield pool[:want]
        rest = pool[want:]
        buffered, held = ([rest] if len(rest) else []), len(rest)
        done += want


def sample(source: str, n: int, out: str | None = None, *, seed: int = 0, ema: bool = True,
           batch_size: int = 1024, format: str | None = None, device: str = "cpu",
           label: int | str | None = None) -> Any:
    """N samples of the run at `source` (its output folder or a checkpoint file), in the data's
    own units: written to `out` (see the module's formats; returns the path written), or, with
    out None, returned (images: uint8 [N, H, W, C]; points: float32 [N, D]; tables: {column:
    values}; a conditional run's with class frequencies drawn: {"samples": ..., "classes": class
    names}). `ema` False samples the trained weights instead of the averaged ones; `device` runs
    the generator there (cpu, cuda, auto); `label` picks a conditional run's class."""
    from .trainer import WGANGPTrainer

    for name, value, low in (("n", n, 1), ("batch_size", batch_size, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    path = checkpoint_of(source)
    state = WGANGPTrainer.read_checkpoint(path)
    sig = state.get("data") or {}
    kind = sig.get("kind")
    fmt = sample_format(out, kind or "points", format) if out is not None else None
    if fmt == "grid" and kind == "image" and n > MAX_GRID_IMAGES:
        raise ValueError(f"a grid of {n} images is too large a picture (at most "
                         f"{MAX_GRID_IMAGES}): write them as .npy or a folder of PNG files")
    # building a trainer seeds torch's global stream and loading one restores the run's, and a
    # table's categories are drawn from it (the Gumbel softmax): all of it on a copy, so a
    # training run in this process is not disturbed
    with torch.random.fork_rng(devices=[]):
        # a checkpoint that describes its data is decoded without the data file; an older one
        # needs the data as the run read it
        dataset = data_mod.StoredDataset(sig) if kind else None
        trainer = WGANGPTrainer.from_checkpoint(path, dataset=dataset, device=device,
                                                backend="auto", step_mode="eager")
        dataset = trainer.dataset
        latent_dim = trainer.config.latent_dim
        names = trainer.class_names
        if label is not None and names is None:
            raise ValueError(f"label {label!r}: the run at {source} is not conditional (trained "
                             f"without --conditional); its generator takes no class")
        if label is not None:
            try:
                trainer._sample_labels(1, label, None)
            except ValueError as exc:
                raise ValueError(f"label (--label) {label!r}: "
                                 f"{str(exc).removeprefix('labels: ')}") from None
        torch.manual_seed(seed)
        drawn: List[np.ndarray] = []
        label_gen = torch.Generator().manual_seed(int(seed) + 1)

        def generated(z):
            labels = None
            if names is not None:
                labels = (label if label is not None
                          else dataset.sample_labels(len(z), label_gen))
                ys = trainer._sample_labels(len(z), labels, None)
                drawn.append(ys.cpu().numpy())
            return trainer.generate_samples(noise=z.to(trainer.device), ema=ema,
                                            labels=labels).numpy()

        batches = (generated(z) for z in _latents(seed, latent_dim, n, batch_size))
        labelled = names is not None and label is None
        if out is None:
            collected = _collect(dataset, batches)
            if labelled:
                return {"samples": collected,
                        "classes": [names[k] for k in np.concatenate(drawn)]}
            return collected
        return _write(dataset, batches, n, out, fmt, trainer, seed,
                      drawn if labelled else None)


def _decoded(dataset, x: np.ndarray) -> Any:
    if dataset.kind == "image":
        return outputs_mod.image_bytes(x)
    if data_mod.is_table(dataset):
        return dataset.codec.decode(x)
    return np.asarray(dataset.decode(x), dtype=np.float32)


def _collect(dataset, batches) -> Any:
    parts = [_decoded(dataset, x) for x in batches]
    if data_mod.is_table(dataset):
        return {name: (np.concatenate([p[name] for p in parts]) if isinstance(parts[0][name],
                                                                              np.ndarray)
                       else [v for p in parts for v in p[name]])
                for name in dataset.codec.names}
    return np.concatenate(parts)


def _write(dataset, batches, n: int, out: str, fmt: str, trainer, seed: int,
           drawn: List[np.ndarray] | None = None) -> str:
    """Write the batches to `out` in `fmt`; `drawn` collects each batch's class indices as the
    batches are generated (a conditional run sampled at its class frequencies), written beside
    the samples."""
    names = trainer.class_names
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    if fmt == "grid":
        x = np.concatenate(list(batches))
        title = (f"{trainer.config.dataset}: {n} samples at step {trainer.step}, seed {seed}")
        if dataset.kind == "image":
            outputs_mod.save_image_grid(x, out)
        else:
            outputs_mod.plot_samples(dataset, x, out, title=title, real=False)
        return out
    if fmt == "csv":
        if drawn is not None:
            # drawn[-1]: the classes of the batch just generated
            write_labelled_csv(out, dataset, names, ((x, drawn[-1]) for x in batches))
            return out
        with open(out, "w", newline="") as f:
            for i, x in enumerate(batches):
                dataset.codec.write_csv(x, f, header=i == 0)
        return out
    if fmt == "png":
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        os.makedirs(out, exist_ok=True)
        width = max(6, len(str(n - 1)))
        done = 0
        for x in batches:
            for i, img in enumerate(outputs_mod.image_bytes(x)):
                folder = out
                if drawn is not None:
                    # one subfolder per class: the layout --images reads back as labels
                    folder = os.path.join(out, safe_class_name(names[int(drawn[-1][i])]))
                    os.makedirs(folder, exist_ok=True)
                plt.imsave(os.path.join(folder, f"{done:0{width}d}.png"),
                           img[..., 0] if img.shape[-1] == 1 else img,
                           cmap="gray" if img.shape[-1] == 1 else None, vmin=0, vmax=255)
                done += 1
        return out
    array = None
    done = 0
    for x in batches:
        values = _decoded(dataset, x)
        if array is None:
            array = np.lib.format.open_memmap(out, mode="w+", dtype=values.dtype,
                                              shape=(n,) + values.shape[1:])
        array[done:done + len(values)] = values
        done += len(values)
    array.flush()
    del array
    if drawn is not None:
        np.save(_labels_path(out), np.concatenate(drawn).astype(np.int64))
    return out


def _labels_path(out: str) -> str:
    """Where the class indices of samples written to `out` (.npy) go: <stem>_labels.npy."""
    stem, _ = os.path.splitext(out)
    return stem + "_labels.npy"
