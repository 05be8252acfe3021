"""WGAN-GP training loop (Algorithm 1 of Gulrajani et al., 2017) around the fused penalty.

Each generator step runs `n_critic` critic steps, each on a FRESH real batch and fresh noise:

    L_critic = E[D(fake)] - E[D(real)] + lambda * E[(||grad D(x_hat)|| - 1)^2]
    L_gen    = -E[D(G(z))]

Lipschitz methods: "gp" (the penalty above, wgangp_fast.gradient_penalty), "lp" (one-sided:
only gradient norms above 1 are penalised, Petzka et al.), "r1" / "r2" (zero-centred penalties on
real / fake samples, Mescheder et al., gamma = gp_lambda), "dragan" (norm 1 around perturbed real
samples, Kodali et al.), "clip" (the original WGAN: RMSprop and weights clamped to [-c, c]) and
"sn" (spectrally normalised critic, no penalty). `pac` > 1 packs
consecutive samples into one critic input (PacGAN / CTGAN) with one penalty group per pack.

`ema_decay` d > 0 keeps an exponential moving average of the generator's weights, updated after
every generator step (ema <- d' ema + (1 - d') weights, d' = min(d, (1 + t) / (10 + t)) after t
updates); samples, pictures and metrics come from it (Yazici et al., 2019, "The Unusual
Effectiveness of Averaging in GAN Training"): it averages out the oscillation of the generator
around the equilibrium, which otherwise smears tight modes. It is saved in the checkpoint.

Scale and precision:
- `precision` "bf16" / "fp16": the forwards run under torch.autocast; fp16 adds a GradScaler per
  optimiser, passed to the penalty as `scaler=` (it differentiates S * mean(output) in float32 and
  folds N / S into the norm's input_scale). A step the scaler skips for overflow does not stop the
  run; a non-finite forward value, or one in fp32 / bf16, does.
- `gp_every` k (lazy regularisation, StyleGAN2): the penalty on every k-th critic step only,
  weighted by k; `lazy_adam_correction` scales the critic's Adam lr by c = k / (k + 1) and its betas
  to (beta1^c, beta2^c).
- Data parallel under torchrun (wgangp_fast.train.distributed): both models in DistributedDataParallel,
  the Wasserstein term through the wrapper, the penalty through the inner critic, one backward; each
  rank draws its own data and noise, `batch_size` is per process, logged losses are the mean over
  ranks, and only rank 0 writes files.

Checkpoints are atomic (temporary file in the same folder, fsync, os.replace), load with
`torch.load(weights_only=True)` and hold everything needed to resume bit for bit: both models, both
optimisers, the RNG states (torch CPU and CUDA, numpy, python `random`, the data sampler) and the
step counters. They are checked on load (our format, finite weights and optimiser state, data
that fits the models) and never replaced by a non-finite state. A run with an output folder locks
it (lock_output_folder), checks it for space, writes the starting state's checkpoint before the
first step and, on SIGINT or SIGTERM, stops after the current step with a checkpoint of it.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import errno
import json
import math
import os
import random
import shutil
import signal
import socket
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

try:
    import fcntl
except ImportError:  # Windows: the lock falls back to a pid file
    fcntl = None

import numpy as np
import torch
from torch import Tensor, nn

from . import backends, reference
from . import steps as steps_mod
from .penalty import gradient_penalty
from .train import data as data_mod
from .train import distributed
from .train import metrics as metrics_mod
from .train.models import (
    ConvCritic,
    ConvGenerator,
    MLPCritic,
    MLPGenerator,
    PacCritic,
    TabularGenerator,
)

__all__ = [
    "CHECKPOINT_NAME",
    "DATASET_PRESETS",
    "CheckpointError",
    "CheckpointWriteError",
    "NonFiniteLossError",
    "OutputFolderError",
    "TrainingInterrupted",
    "WGANGPConfig",
    "WGANGPTrainer",
    "atomic_save",
    "check_checkpoint",
    "lock_output_folder",
]

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1
METHODS = ("gp", "lp", "clip", "sn", "r1", "r2", "dragan")
# method -> wgangp_fast.gradient_penalty(kind=...)
PENALTY_KINDS = {"gp": "wgan-gp", "lp": "wgan-lp", "r1": "r1", "r2": "r2", "dragan": "dragan"}
PRECISIONS = ("fp32", "bf16", "fp16")
# how a training iteration runs (wgangp_fast.steps): "eager" is the loop below
STEP_MODES = steps_mod.MODES
# consecutive critic steps the fp16 GradScaler may skip before the run is declared broken: backing
# off from the default scale 2^16 to 1 takes 16
MAX_SKIPPED_IN_A_ROW = 64
MODELS = ("auto", "mlp", "conv", "pac")
PENALTY_IMPLS = ("fused", "reference")
LR_DECAYS = ("none", "linear")
HISTORY_KEYS = ("loss_c", "loss_g", "gp", "wasserstein")

# Settings per dataset that differ from the seed defaults (WGANGPConfig's), found by measuring the
# metrics of wgangp_fast.train.metrics on CPU runs of a few minutes (README, "Train a WGAN-GP"). For the
# 2-D mixtures: lambda 0.1, as the WGAN-GP authors use for their toy data (a steeper critic pulls
# samples into the tight modes faster), Adam betas (0.5, 0.9) as in their toy code, and a linear
# learning-rate decay to 0, which removes the parameter jitter that otherwise smears the modes.
# ring8 and grid25 add, from measured runs (README): a 2-D latent as in the authors' toy code (a
# continuous generator must stretch its latent over the gaps between modes; from 2-D noise it
# leaves far fewer samples on those bridges than from 100-D noise: grid25 16/25 modes against
# 8/25 after 1500 steps) and a learning rate 8-20x higher (structure forms faster; the decay still
# sharpens the modes at the end). No EMA: with the decay to 0 the averaged generator was no better
# at the end (ring8, 3000 steps: 72.6% high-quality samples against 78.1% without); it pays off
# with a constant learning rate (ring8, lr 4e-3, 1500 steps: 70% against 14%). No BatchNorm in
# the generator (as in the authors' toy generator): sampling uses its running statistics, and the
# tight modes (std 0.02 on a radius-2 ring) are sensitive to them: a BatchNorm ring8 generator gave
# 89% high-quality samples with batch statistics but 75-79% with its running ones (and 64-86% with
# statistics recomputed for the final weights). With the 2-D latent and without BatchNorm, ring8
# reached 91.4% (5000 steps) and 95.1% (3000 steps), grid25 25/25 modes. (With the 100-D latent,
# removing BatchNorm had cost ring8: 35% against 62% after 3000 steps.)
_TOY = {"batch_size": 256, "hidden_dim": 64, "lr": 5e-4, "beta1": 0.5, "gp_lambda": 0.1,
        "lr_decay": "linear"}
DATASET_PRESETS: Dict[str, Dict[str, Any]] = {
    "ring8": dict(_TOY, steps=5000, lr=1e-2, latent_dim=2, generator_batchnorm=False),
    "grid25": dict(_TOY, steps=5000, lr=4e-3, latent_dim=2, generator_batchnorm=False),
    "swissroll": dict(_TOY, steps=3000),
    "digits": {"steps": 3000, "batch_size": 64, "hidden_dim": 128},
    "csv": {"steps": 1000, "batch_size": 500, "pac": 10, "model": "pac"},
}


class CheckpointError(ValueError):
    """A checkpoint file that cannot continue a run: not ours, damaged, or holding NaN/inf."""


class CheckpointWriteError(OSError):
    """The checkpoint could not be written (no space left, no permission); the previous one, if
    any, is untouched."""


class OutputFolderError(RuntimeError):
    """The output folder cannot take this run: in use by another run, not writable, or short of
    space for a checkpoint."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the run between two steps, after a checkpoint of that step."""

    def __init__(self, step: int, signum: int, checkpoint: str | None) -> None:
        self.step, self.signum, self.checkpoint = step, signum, checkpoint
        name = signal.Signals(signum).name
        where = f"; checkpoint saved to {checkpoint}" if checkpoint else ""
        super().__init__(f"{name} stopped the run after step {step}{where}")


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; the run stops and the last good checkpoint is kept."""

    def __init__(self, step: int, values: Dict[str, float]) -> None:
        self.step = step
        self.values = values
        shown = ", ".join(f"{k}={v}" for k, v in values.items())
        super().__init__(f"non-finite loss at step {step} ({shown}); training stopped. The last "
                         f"good checkpoint (if any) was kept: lower the learning rate or check "
                         f"the data")


@dataclass
class WGANGPConfig:
    """Every setting of a run. Defaults are seed 002's; `for_dataset` applies DATASET_PRESETS."""

    dataset: str = "ring8"
    data_path: str | None = None
    npz_key: str | None = None
    categorical: Tuple[str, ...] = ()
    image_size: int | None = None
    model: str = "auto"
    method: str = "gp"
    steps: int = 1000
    latent_dim: int = 100
    hidden_dim: int = 256
    feature_maps: int = 64
    generator_batchnorm: bool = True
    lr: float = 1e-4
    lr_decay: str = "none"
    ema_decay: float = 0.0
    beta1: float = 0.0
    beta2: float = 0.9
    gp_lambda: float = 10.0
    n_critic: int = 5
    batch_size: int = 64
    pac: int = 1
    clip_value: float = 0.01
    clip_lr: float = 5e-5
    seed: int = 42
    device: str = "auto"
    backend: str = "auto"
    penalty_impl: str = "fused"
    separate_backward: bool = False
    precision: str = "fp32"
    step_mode: str = "eager"
    gp_every: int = 1
    lazy_adam_correction: bool = False
    out_dir: str | None = None
    checkpoint_every: int = 0
    n_eval_samples: int = 2500

    @classmethod
    def for_dataset(cls, dataset: str = "ring8", **overrides: Any) -> WGANGPConfig:
        """The seed defaults, then the dataset's preset, then `overrides` (None values ignored)."""
        settings: Dict[str, Any] = {"dataset": dataset}
        settings.update(DATASET_PRESETS.get(dataset, {}))
        settings.update({k: v for k, v in overrides.items() if v is not None})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - names)
        if unknown:
            raise TypeError(f"unknown WGANGPConfig settings: {', '.join(unknown)}")
        return cls(**settings)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> WGANGPConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in d.items() if k in names}
        if "categorical" in kept:
            kept["categorical"] = tuple(kept["categorical"] or ())
        return cls(**kept)

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["categorical"] = list(self.categorical)
        return d

    def step_mode_conflict(self) -> str | None:
        """Why this configuration needs the eager step (None when the whole-step modes of
        wgangp_fast.steps can run it)."""
        if self.method not in PENALTY_KINDS:
            return (f"method {self.method!r} (weight clipping or a spectral-norm critic, whose "
                    f"power iteration mutates buffers)")
        if self.penalty_impl != "fused":
            return "penalty_impl 'reference' (the plain-autograd comparison path)"
        if self.separate_backward:
            return "separate_backward (two backward calls per step)"
        if self.precision == "fp16":
            return "precision fp16 (its GradScaler; bf16 needs none)"
        return None

    def validate(self) -> WGANGPConfig:
        # numpy scalars (np.int64 from a sweep, say) become Python ones: accepted like them, and
        # the checkpoint's config stays loadable with weights_only=True
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.generic):
                setattr(self, f.name, value.item())

        def choice(name, allowed):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")

        def integer(name, minimum):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")

        def number(name, positive=True):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or (positive and value <= 0) or value < 0:
                raise ValueError(f"{name} must be a finite {'positive ' if positive else ''}"
                                 f"number, got {value!r}")

        choice("dataset", data_mod.DATASETS)
        choice("model", MODELS)
        choice("method", METHODS)
        choice("penalty_impl", PENALTY_IMPLS)
        choice("lr_decay", LR_DECAYS)
        choice("precision", PRECISIONS)
        choice("step_mode", STEP_MODES)
        if self.step_mode not in ("eager", "auto"):
            why = self.step_mode_conflict()
            if why:
                raise ValueError(f"step_mode {self.step_mode!r} cannot run this configuration: "
                                 f"{why}; use step_mode 'eager' (or 'auto', which falls back)")
        choice("backend", ("auto",) + backends.BACKENDS)
        integer("gp_every", 1)
        if self.gp_every > 1 and self.method not in PENALTY_KINDS:
            raise ValueError(f"gp_every > 1 (lazy regularisation) needs a penalty method "
                             f"({', '.join(PENALTY_KINDS)}), got method {self.method!r}")
        if self.precision == "fp16" and self.penalty_impl == "reference":
            raise ValueError("penalty_impl 'reference' has no GradScaler path: use precision "
                             "fp32 or bf16 with it, or the fused penalty with fp16")
        for name in ("steps", "checkpoint_every"):
            integer(name, 0)
        for name in ("latent_dim", "hidden_dim", "feature_maps", "n_critic", "batch_size", "pac",
                     "n_eval_samples"):
            integer(name, 1)
        integer("seed", 0)
        for name in ("lr", "clip_value", "clip_lr"):
            number(name)
        number("gp_lambda", positive=False)
        number("ema_decay", positive=False)
        if not self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1) (0: no averaging), got "
                             f"{self.ema_decay!r}")
        for name in ("beta1", "beta2"):
            number(name, positive=False)
            if not getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.batch_size % self.pac:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of pac "
                             f"({self.pac})")
        if self.pac > 1 and self.model not in ("pac", "auto"):
            raise ValueError(f"pac > 1 needs the packed critic (model 'pac'), got model "
                             f"{self.model!r}")
        if self.method == "sn" and self.model == "pac":
            raise ValueError("method 'sn' (spectral norm) works with models 'mlp' and 'conv', "
                             "not 'pac'")
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"device must be a string such as 'cpu', 'cuda' or 'auto', got "
                             f"{self.device!r}")
        return self


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"device {name!r} is not a valid torch device ({exc})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but CUDA is not available here; "
                         f"use --device cpu")
    return device


def _os_error_in(exc: BaseException) -> OSError | None:
    """The first OSError with an errno in the chain of `exc`: torch.save reports a full disk as a
    RuntimeError ("unexpected pos ...") raised while handling the OSError that says so."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _free_bytes(folder: str) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _mb(n: float) -> str:
    return f"{n / 2 ** 20:.1f} MB"


def atomic_save(obj: Any, path: str) -> None:
    """torch.save to a temporary file in the same folder, fsync, then os.replace onto `path`:
    a crash at any point leaves either the old file or the new one, never a torn one.

    A write that fails for want of space or permission raises CheckpointWriteError, which says
    so in its first line (torch's own error for a full disk is an "unexpected pos" two chained
    exceptions above the "No space left on device")."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                                   dir=folder)
    except OSError as exc:
        raise _write_error(path, exc, exc) from None
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        cause = _os_error_in(exc)
        if cause is not None:
            raise _write_error(path, cause, exc) from None
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _write_error(path: str, cause: OSError, exc: BaseException) -> CheckpointWriteError:
    folder = os.path.dirname(os.path.abspath(path))
    kept = "the previous checkpoint is kept" if os.path.isfile(path) else "no checkpoint written"
    reason = cause.strerror or str(cause)
    if cause.errno in (errno.ENOSPC, errno.EDQUOT):
        free = _free_bytes(folder)
        shown = f", {_mb(free)} free" if free is not None else ""
        fix = "free some space or choose another output folder (--out)"
        reason = f"{reason} (the filesystem of {folder}{shown})"
    else:
        fix = "check the output folder's permissions, or choose another (--out)"
    return CheckpointWriteError(cause.errno, f"cannot write the checkpoint {path}: {reason}; "
                                             f"{kept}: {fix}")


LOCK_NAME = ".wgangp-fast.lock"
# locks this process holds: real path of the folder -> [lock file descriptor, count, whether
# the lock created the folder]
_HELD_LOCKS: Dict[str, List[Any]] = {}


def _lock_holder(text: str) -> str:
    fields = text.split()
    if len(fields) >= 2:
        return f"pid {fields[0]} on {fields[1]}"
    return "a process whose pid the lock file does not say"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _in_use(folder: str, holder: str) -> OutputFolderError:
    return OutputFolderError(
        f"--out {folder} is in use by another wgangp-fast run ({holder}): two runs on one folder "
        f"would overwrite each other's checkpoint and outputs. Wait for that run to end (or stop "
        f"it), or give this run another output folder (--out)")


def _read_lock(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode("utf-8", "replace")


def _take_lock(folder: str, path: str) -> Tuple[int, str]:
    """An open, locked lock file in `folder` and what it said before (a dead holder's pid)."""
    dead = ""
    for _ in range(100):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | (0 if fcntl else os.O_EXCL), 0o644)
        except FileExistsError:  # the pid-file fallback
            with open(path) as f:
                text = f.read()
            fields = text.split()
            pid = int(fields[0]) if fields and fields[0].isdigit() else None
            if pid is not None and pid != os.getpid() and _pid_alive(pid):
                raise _in_use(folder, _lock_holder(text)) from None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            dead = text
            continue
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                text = _read_lock(fd)
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    raise _in_use(folder, _lock_holder(text)) from None
                raise
            # the holder removes the file when it ends: a lock on a file no longer at `path`
            # guards nothing, so start again
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
        before = _read_lock(fd) or dead
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()} {socket.gethostname()} {time.time():.0f}\n".encode())
        return fd, before
    raise OutputFolderError(f"--out {folder}: could not take the lock {path} (it keeps being "
                            f"replaced)")


def _remove_stale_temporaries(folder: str) -> List[str]:
    """Temporary checkpoint files that a killed write left behind (atomic_save's own are removed
    when the write fails; a SIGKILL leaves them). Only called with the folder's lock held, so
    no live run of ours is writing them."""
    prefix = "." + CHECKPOINT_NAME + "."
    removed = []
    for name in os.listdir(folder):
        if name.startswith(prefix) and name.endswith(".tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, name))
                removed.append(name)
    return removed


class _FolderLock:
    """What lock_output_folder returns: which stale lock it took over and which stale temporary
    files it removed (both empty for a clean folder)."""

    def __init__(self, folder: str, key: str, stale_holder: str, removed: List[str]) -> None:
        self.folder, self._key = folder, key
        self.stale_holder, self.removed = stale_holder, removed
        self._released = False

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        entry = _HELD_LOCKS.get(self._key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del _HELD_LOCKS[self._key]
            # removed before it is unlocked, so a run that opens it meanwhile sees it gone
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self._key, LOCK_NAME))
            os.close(entry[0])
            if entry[2]:
                # a run refused at start leaves no empty folder behind (rmdir only removes an
                # empty one)
                with contextlib.suppress(OSError):
                    os.rmdir(self._key)

    def __enter__(self) -> _FolderLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_output_folder(folder: str) -> _FolderLock:
    """Lock `folder` for this run (re-entrant within a process): creates the folder, checks that
    it is writable, refuses a folder another live run holds (naming its pid), takes over the lock
    of a run that died, and removes the temporary files of checkpoint writes that a kill
    interrupted. Use as a context manager, or call .release().

    The lock is an flock on `folder/.wgangp-fast.lock`, which also holds the holder's pid and
    host: the kernel drops it when the holder dies, even by SIGKILL, so a stale lock never
    blocks a new run."""
    created = not os.path.exists(folder)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise OutputFolderError(f"--out {folder}: cannot create the output folder "
                                f"({exc.strerror or exc}): choose a folder you can write to") \
            from None
    if not os.path.isdir(folder):
        raise OutputFolderError(f"--out {folder} exists and is not a folder")
    key = os.path.realpath(folder)
    entry = _HELD_LOCKS.get(key)
    if entry is not None:
        entry[1] += 1
        return _FolderLock(folder, key, "", [])
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputFolderError(f"--out {folder}: the folder is not writable by this user: fix "
                                f"its permissions or choose another output folder (--out)")
    try:
        fd, before = _take_lock(folder, os.path.join(key, LOCK_NAME))
    except OSError as exc:
        raise OutputFolderError(f"--out {folder}: cannot write in the output folder "
                                f"({exc.strerror or exc}): fix its permissions or free space, "
                                f"or choose another output folder (--out)") from None
    _HELD_LOCKS[key] = [fd, 1, created]
    stale = _lock_holder(before) if before.split() and before.split()[0] != str(os.getpid()) \
        else ""
    return _FolderLock(folder, key, stale, _remove_stale_temporaries(key))


def _non_finite(tensors, where: str) -> List[str]:
    """Names of the floating-point tensors in a (nested) dict or list that hold NaN or inf."""
    bad = []
    if isinstance(tensors, Tensor):
        if tensors.is_floating_point() and not torch.isfinite(tensors).all():
            bad.append(where)
    elif isinstance(tensors, dict):
        for k, v in tensors.items():
            bad += _non_finite(v, f"{where}.{k}" if where else str(k))
    elif isinstance(tensors, (list, tuple)):
        for i, v in enumerate(tensors):
            bad += _non_finite(v, f"{where}[{i}]")
    return bad


# what a checkpoint must hold, and the type of each entry
_CHECKPOINT_KEYS = {
    "format": int, "config": dict, "step": int, "critic_iters": int, "generator": dict,
    "critic": dict, "optimizer_g": dict, "optimizer_c": dict, "sampler": dict, "rng": dict,
    "fixed_noise": Tensor, "history": dict,
}
# the entries that hold the state a resumed run computes with: NaN or inf in any is fatal
_FINITE_PARTS = ("generator", "critic", "generator_ema", "optimizer_g", "optimizer_c",
                 "fixed_noise")


def check_checkpoint(state: Any, path: str = "checkpoint") -> Dict[str, Any]:
    """`state` if it is a checkpoint this trainer wrote and can continue from, else a
    CheckpointError that says what is wrong with it: not our format (another file, a bare
    tensor or state_dict), or NaN/inf in the weights or optimiser state."""
    fix = ("resume from the checkpoint.pt that `wgangp-fast train` (WGANGPTrainer) wrote in its "
           "output folder, or start a new run without --resume")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a wgangp_fast checkpoint (it holds a "
                              f"{type(state).__name__}, not the dict WGANGPTrainer.save_checkpoint "
                              f"writes): {fix}")
    missing = [k for k in _CHECKPOINT_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a wgangp_fast checkpoint (a dict without "
                              f"{', '.join(missing)}): {fix}")
    if state["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {state['format']!r} is not supported "
                              f"(expected {CHECKPOINT_FORMAT}): {fix}")
    wrong = [f"{k} is a {type(state[k]).__name__}, expected {t.__name__}"
             for k, t in _CHECKPOINT_KEYS.items()
             if not isinstance(state[k], t) or (t is int and isinstance(state[k], bool))]
    history = state["history"]
    if not wrong and not all(isinstance(history.get(k), Tensor) and len(history[k]) == state["step"]
                             for k in HISTORY_KEYS):
        wrong.append(f"history does not hold {', '.join(HISTORY_KEYS)} with one value per step "
                     f"({state['step']})")
    if wrong:
        raise CheckpointError(f"{path}: a damaged or foreign checkpoint ({'; '.join(wrong)}): "
                              f"{fix}")
    bad = []
    for part in _FINITE_PARTS:
        bad += _non_finite(state.get(part), part)
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise CheckpointError(f"{path}: the checkpoint holds NaN or infinite values ({shown}), "
                              f"so a run resumed from it cannot recover: start a new run without "
                              f"--resume, or resume from an earlier copy of the checkpoint")
    return state


def _portable(optimizer_state: Dict[str, Any]) -> Dict[str, Any]:
    """An optimiser state_dict with plain float learning rates: the compiled and captured step
    modes hold the lr in a device tensor, which a run resumed in another mode (or on another
    device) must not inherit."""
    groups = [{**g, "lr": float(g["lr"])} if isinstance(g.get("lr"), Tensor) else g
              for g in optimizer_state["param_groups"]]
    return {**optimizer_state, "param_groups": groups}


def _rng_state() -> Dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": int(py_state[0]),
                   "state": torch.tensor(py_state[1], dtype=torch.int64),
                   "gauss_next": py_state[2]},
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)


def _set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


class WGANGPTrainer:
    """Builds the data, models and optimisers of a `WGANGPConfig` and trains them.

        trainer = WGANGPTrainer(WGANGPConfig.for_dataset("ring8", steps=2000))
        trainer.train(progress=True)
        samples = trainer.generate_samples(2500)
    """

    def __init__(self, config: WGANGPConfig | None = None,
                 dataset: data_mod.Dataset | None = None) -> None:
        self.config = (config or WGANGPConfig()).validate()
        cfg = self.config
        self.dist, dist_device = distributed.setup(cfg.device)
        self.rank = self.dist.rank
        self.world_size = self.dist.world_size
        self.is_main_process = self.dist.is_main
        if self.dist.enabled and cfg.separate_backward:
            raise ValueError("separate_backward (two backward calls per critic step) cannot be "
                             "used with DistributedDataParallel, which reduces each gradient once "
                             "per step: leave it off for torchrun runs")
        self.device = dist_device if dist_device is not None else _resolve_device(cfg.device)
        if cfg.precision == "bf16" and self.device.type == "cuda" \
                and not torch.cuda.is_bf16_supported():
            raise ValueError(f"precision bf16 is not supported on {self.device}: use fp16")
        # fp16 needs loss scaling (one scaler per optimiser: each backs off on its own
        # overflows); bfloat16 has float32's exponent range and needs none
        self.scaler = self.scaler_g = None
        if cfg.precision == "fp16":
            self.scaler = torch.amp.GradScaler(self.device.type)
            self.scaler_g = torch.amp.GradScaler(self.device.type)
        self.amp_skipped_steps = 0
        self._skipped_in_a_row = 0

        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)

        self.dataset = dataset if dataset is not None else data_mod.load_dataset(
            cfg.dataset, cfg.data_path, image_size=cfg.image_size, npz_key=cfg.npz_key,
            categorical=cfg.categorical)
        self.model_kind = self._model_kind()
        self.generator, self.critic = self._build_models()
        self._check_batch_norm_batch()
        self._check_backend()
        self.generator.to(self.device)
        self.critic.to(self.device)
        self.optimizer_g, self.optimizer_c = self._build_optimizers()
        self.generator_ema = self._build_ema()
        # The models start equal on every rank (same seed; DDP also broadcasts rank 0's); from here
        # on each rank draws its own noise and dropout masks.
        if self.dist.enabled:
            _seed_all(distributed.derive_seed(cfg.seed, self.rank, 0))
        self.critic_ddp = distributed.wrap(self.critic, self.device)
        self.generator_ddp = distributed.wrap(self.generator, self.device)
        # Distinct from the global seed stream so that the data stream is not correlated with
        # model initialisation; each rank of a data-parallel run adds its rank.
        self.sampler = data_mod.BatchSampler(self.dataset, cfg.batch_size,
                                             seed=cfg.seed * 1009 + 17 + self.rank,
                                             device=self.device)
        noise_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.fixed_noise = torch.randn(64, cfg.latent_dim, generator=noise_gen).to(self.device)
        self.train_iteration = self._build_train_step()

        self.step = 0
        self.critic_iters = 0
        self.train_seconds = 0.0
        self.history: Dict[str, List[float]] = {k: [] for k in HISTORY_KEYS}
        # the penalty of the last regularised critic step, in its own units (not times gp_every)
        self._last_gp = torch.zeros((), device=self.device)
        self._last_gp_skipped = False
        # (real path, step) of the checkpoint on disk that holds this exact state, if any
        self._saved_at: Tuple[str, int] | None = None

    # -- construction ------------------------------------------------------------------------

    def _model_kind(self) -> str:
        cfg, kind = self.config, self.config.model
        if kind == "auto":
            kind = "pac" if (self.dataset.kind == "tabular" or cfg.pac > 1) else "mlp"
        if kind == "conv":
            if self.dataset.kind != "image":
                raise ValueError(f"model 'conv' needs image data, dataset {cfg.dataset!r} is "
                                 f"{self.dataset.kind}")
            c, h, w = self.dataset.shape
            if h != w or h < 8 or h & (h - 1):
                raise ValueError(f"model 'conv' needs square images with a power-of-two side "
                                 f">= 8, got {h}x{w}: pass image_size (--image-size 32) to resize")
        return kind

    def _build_models(self) -> Tuple[nn.Module, nn.Module]:
        cfg, ds = self.config, self.dataset
        sn = cfg.method == "sn"
        if self.model_kind == "conv":
            c, size, _ = ds.shape
            return (ConvGenerator(cfg.latent_dim, c, size, cfg.feature_maps),
                    ConvCritic(c, size, cfg.feature_maps, spectral_norm=sn))
        if ds.kind == "tabular":
            gen: nn.Module = TabularGenerator(cfg.latent_dim, ds.dim,
                                              hidden=(cfg.hidden_dim, cfg.hidden_dim),
                                              categorical_spans=ds.categorical_spans)
        else:
            act = "tanh" if ds.kind == "image" else None
            gen = MLPGenerator(cfg.latent_dim, cfg.hidden_dim, ds.shape, act,
                               batch_norm=cfg.generator_batchnorm)
        if self.model_kind == "pac":
            critic: nn.Module = PacCritic(ds.dim, cfg.pac, hidden=(cfg.hidden_dim, cfg.hidden_dim))
        else:
            critic = MLPCritic(ds.shape, cfg.hidden_dim, spectral_norm=sn)
        return gen, critic

    def _check_batch_norm_batch(self) -> None:
        """BatchNorm in training mode needs two samples per batch; a batch of one would fail at
        the first generator call, so it is refused here, before any training."""
        cfg = self.config
        if cfg.batch_size >= 2 or not any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                          for m in self.generator.modules()):
            return
        fix = ("use batch_size >= 2 (--batch 2)" + (
            ", or a generator without BatchNorm (generator_batchnorm=False, "
            "--no-generator-batchnorm)" if isinstance(self.generator, MLPGenerator) else ""))
        raise ValueError(f"batch_size {cfg.batch_size} is too small for the "
                         f"{type(self.generator).__name__}'s BatchNorm layers, which need at "
                         f"least 2 samples per batch in training: {fix}")

    def _check_backend(self) -> None:
        """The penalty backend must run on this run's device: checked now, not at the first
        critic step."""
        cfg = self.config
        if cfg.method not in PENALTY_KINDS or cfg.penalty_impl != "fused":
            return
        try:
            backends.resolve(cfg.backend, self.device)
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"backend {cfg.backend!r} (--backend) cannot compute the penalty on "
                             f"{self.device}: {exc}. Available here: "
                             f"{', '.join(backends.available_backends())}; "
                             f"'auto' picks one") from None

    def _build_train_step(self) -> steps_mod.TrainStep | None:
        """The whole iteration as a wgangp_fast.steps.TrainStep for the step modes other than
        eager (None: the eager loop of _critic_step and _generator_step). The mode is chosen
        here, so a mode that cannot run this configuration is refused before training; under
        "auto" such a configuration keeps the eager loop, with a warning that says why."""
        cfg = self.config
        if cfg.step_mode == "eager":
            return None
        why = cfg.step_mode_conflict()
        if self.dist.enabled:
            why = "a distributed run (DDP's all-reduce hooks need eager autograd)"
        if why:
            if cfg.step_mode == "auto":
                return None
            raise ValueError(f"step_mode {cfg.step_mode!r} cannot run {why}: use step_mode "
                             f"'eager'")
        mode, why = steps_mod.choose_mode(cfg.step_mode, self.device, self.critic,
                                          modules=[self.generator],
                                          optimizers=[self.optimizer_c, self.optimizer_g])
        if mode == "eager":
            if why:
                warnings.warn(f"step_mode 'auto' runs eager: {why}", RuntimeWarning,
                              stacklevel=3)
            return None
        autocast = {"bf16": torch.bfloat16}.get(cfg.precision)
        critic_step = steps_mod.CriticStep(
            self.critic, self.optimizer_c, lambda_gp=cfg.gp_lambda, pac=cfg.pac,
            kind=PENALTY_KINDS[cfg.method], mode=mode, autocast=autocast,
            gp_every=cfg.gp_every, backend=cfg.backend)
        generator_step = steps_mod.GeneratorStep(self.generator, self.critic, self.optimizer_g,
                                                 mode=mode, autocast=autocast)
        return steps_mod.TrainStep(critic_step, generator_step, latent_dim=cfg.latent_dim,
                                   n_critic=cfg.n_critic)

    @property
    def step_mode(self) -> str:
        """The mode the iterations run in ("eager" or one of wgangp_fast.steps.MODES)."""
        if self.train_iteration is None:
            return "eager"
        return self.train_iteration.mode or self.train_iteration.requested_mode

    def _build_ema(self) -> nn.Module | None:
        """The averaged generator of ema_decay > 0: a frozen copy, always in eval mode."""
        if self.config.ema_decay <= 0:
            return None
        ema = copy.deepcopy(self.generator).eval()
        for p in ema.parameters():
            p.requires_grad_(False)
        return ema

    def _build_optimizers(self):
        cfg = self.config
        if cfg.method == "clip":
            return (torch.optim.RMSprop(self.generator.parameters(), lr=cfg.clip_lr),
                    torch.optim.RMSprop(self.critic.parameters(), lr=cfg.clip_lr))
        betas = (float(cfg.beta1), float(cfg.beta2))
        c = self._critic_lr_factor()
        betas_c = (float(cfg.beta1) ** c, float(cfg.beta2) ** c)
        return (torch.optim.Adam(self.generator.parameters(), lr=cfg.lr, betas=betas),
                torch.optim.Adam(self.critic.parameters(), lr=cfg.lr * c, betas=betas_c))

    def _critic_lr_factor(self) -> float:
        """StyleGAN2's lazy-regularisation correction c = k / (k + 1) of the critic's Adam (lr
        times c, betas to the power c); 1 without lazy_adam_correction or when k = 1."""
        cfg = self.config
        if not cfg.lazy_adam_correction or cfg.gp_every == 1 or cfg.method == "clip":
            return 1.0
        return cfg.gp_every / (cfg.gp_every + 1)

    # -- one step ----------------------------------------------------------------------------

    def _autocast(self):
        """The precision context of the forward passes: torch.autocast for bf16 / fp16."""
        precision = self.config.precision
        if precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.float16 if precision == "fp16" else torch.bfloat16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _noise(self, n: int) -> Tensor:
        return torch.randn(n, self.config.latent_dim, device=self.device)

    def _penalty(self, real: Tensor, fake: Tensor, alpha: Tensor | None = None) -> Tensor | None:
        """The Lipschitz penalty of this method (None for clip and sn), through the inner critic:
        its input gradient stays process-local under DDP (see wgangp_fast.train.distributed). `alpha`
        fixes the interpolation weights (one per pac group) instead of drawing them."""
        cfg = self.config
        kind = PENALTY_KINDS.get(cfg.method)
        if kind is None:
            return None
        if cfg.penalty_impl == "fused":
            return gradient_penalty(self.critic, real, fake, lambda_gp=cfg.gp_lambda, pac=cfg.pac,
                                    kind=kind, alpha=alpha, scaler=self.scaler,
                                    backend=cfg.backend)
        return self._reference_penalty(real, fake, alpha)

    def _reference_penalty(self, real: Tensor, fake: Tensor, alpha: Tensor | None) -> Tensor:
        """The same penalty in plain autograd (the seeds' code where it exists)."""
        cfg, critic, lam, n = self.config, self.critic, self.config.gp_lambda, real.shape[0]
        if cfg.pac == 1 and cfg.method in ("r1", "r2"):
            return reference.r1_penalty(critic, real if cfg.method == "r1" else fake, gamma=lam)
        if cfg.pac == 1 and cfg.method == "dragan" and alpha is None:
            return reference.dragan_penalty(critic, real, lambda_gp=lam)
        if cfg.method == "gp" and alpha is None:
            if cfg.pac == 1:
                return reference.per_sample_gradient_penalty(critic, real, fake, lambda_gp=lam)
            return reference.ctgan_gradient_penalty(critic, real.reshape(n, -1),
                                                    fake.reshape(n, -1), device=real.device,
                                                    pac=cfg.pac, lambda_=lam)
        zero_centred = cfg.method in ("r1", "r2")
        if zero_centred:
            x_hat = (real if cfg.method == "r1" else fake).detach()
        else:
            if cfg.method == "dragan":
                noise = torch.rand(real.shape, device=real.device, dtype=real.dtype)
                real, fake = real + 0.5 * real.std() * noise, real
            if alpha is None:
                alpha = torch.rand(n // cfg.pac, device=real.device)
            x_hat = reference.interpolate(real, fake, alpha, cfg.pac)
        x_hat = x_hat.detach().requires_grad_(True)
        out = critic(x_hat)
        (grads,) = torch.autograd.grad(out, x_hat, torch.ones_like(out), create_graph=True)
        return reference.gradient_norm_penalty(grads, cfg.pac, target=0.0 if zero_centred else 1.0,
                                               one_sided=cfg.method == "lp",
                                               scale=lam / 2 if zero_centred else lam)

    def _backward(self, loss: Tensor, scaler, **kwargs) -> None:
        (scaler.scale(loss) if scaler is not None else loss).backward(**kwargs)

    def _optimizer_step(self, optimizer, scaler) -> bool:
        """optimizer.step(), through the GradScaler in fp16; True when the scaler skipped the
        step (inf/NaN gradients: the weights were not touched and the scale backed off)."""
        if scaler is None:
            optimizer.step()
            return False
        before = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        # update() lowers the scale exactly when this step found inf/NaN gradients; under DDP the
        # gradients were all-reduced first, so every rank skips together
        skipped = scaler.get_scale() < before
        self.amp_skipped_steps += int(skipped)
        return skipped

    def _critic_backward(self, real: Tensor, fake: Tensor,
                         alpha: Tensor | None = None) -> Dict[str, Any]:
        """The critic loss of one step and its backward (scaled in fp16); no optimiser step.

        The Wasserstein term goes through the DDP wrapper (which arms the all-reduce), the
        penalty through the inner critic, and one backward of their sum reaches every
        parameter. With gp_every k the penalty is computed on every k-th critic step, times k.
        """
        cfg = self.config
        k = cfg.gp_every
        regularise = cfg.method in PENALTY_KINDS and self.critic_iters % k == 0
        with self._autocast():
            # One critic pass over real and fake together: the critic has no batch coupling, and
            # n is a multiple of pac, so no pack mixes real and fake rows.
            scores = self.critic_ddp(torch.cat([real, fake])).float()
            m = scores.shape[0] // 2
            wasserstein = scores[:m].mean() - scores[m:].mean()
            loss = -wasserstein
            pen = self._penalty(real, fake, alpha) if regularise else None
        if pen is None:
            self._backward(loss, self.scaler)
            total = loss
        else:
            weighted = pen * k if k > 1 else pen
            if cfg.separate_backward:
                self._backward(weighted, self.scaler, retain_graph=True)
                self._backward(loss, self.scaler)
                total = loss + weighted
            else:
                total = loss + weighted
                self._backward(total, self.scaler)
        return {"loss_c": total.detach(), "wasserstein": wasserstein.detach(),
                "gp": None if pen is None else pen.detach()}

    def _critic_step(self, real: Tensor) -> Dict[str, Any]:
        """One critic update on a real batch; returns detached loss_c, wasserstein and gp (None
        on a step without the penalty) and whether the GradScaler skipped the update."""
        cfg = self.config
        n = real.shape[0]
        self.optimizer_c.zero_grad(set_to_none=not cfg.separate_backward)
        with torch.no_grad(), self._autocast():
            fake = self.generator(self._noise(n))
        stats = self._critic_backward(real, fake.to(real.dtype))
        skipped = self._optimizer_step(self.optimizer_c, self.scaler)
        self._skipped_in_a_row = self._skipped_in_a_row + 1 if skipped else 0
        if cfg.method == "clip":
            with torch.no_grad():
                for p in self.critic.parameters():
                    p.clamp_(-cfg.clip_value, cfg.clip_value)
        self.critic_iters += 1
        if stats["gp"] is not None:
            self._last_gp = stats["gp"]
            self._last_gp_skipped = skipped
        stats["skipped"] = skipped
        return stats

    def _generator_step(self, n: int) -> Tensor:
        self.optimizer_g.zero_grad(set_to_none=True)
        with self._autocast():
            fake = self.generator_ddp(self._noise(n))
            # the inner critic: its gradients here are not used, so DDP need not reduce them
            loss_g = -self.critic(fake).float().mean()
        self._backward(loss_g, self.scaler_g)
        self._optimizer_step(self.optimizer_g, self.scaler_g)
        return loss_g.detach()

    def ema_decay_at(self, updates: int) -> float:
        """The averaging weight after `updates` generator updates: min(ema_decay, (1 + t) /
        (10 + t)), TensorFlow's ExponentialMovingAverage with num_updates, so that the
        average forgets the random initial weights within the first few dozen steps."""
        return min(self.config.ema_decay, (1.0 + updates) / (10.0 + updates))

    @torch.no_grad()
    def _update_ema(self) -> None:
        """ema <- d * ema + (1 - d) * weights, for the parameters and the floating-point buffers
        (BatchNorm running statistics); integer buffers (batch counters) are copied."""
        if self.generator_ema is None:
            return
        weight = 1.0 - self.ema_decay_at(self.step)
        for avg, cur in zip(self.generator_ema.parameters(), self.generator.parameters()):
            avg.lerp_(cur, weight)
        for avg, cur in zip(self.generator_ema.buffers(), self.generator.buffers()):
            if avg.is_floating_point():
                avg.lerp_(cur, weight)
            else:
                avg.copy_(cur)

    def _set_learning_rate(self) -> None:
        """lr_decay "linear": lr * (1 - step / steps), as Gulrajani et al. decay it for CIFAR-10.
        A function of the step alone, so a resumed run follows the same schedule."""
        cfg = self.config
        if cfg.lr_decay != "linear":
            return
        base = cfg.clip_lr if cfg.method == "clip" else cfg.lr
        factor = max(0.0, 1.0 - self.step / max(cfg.steps, 1))
        for opt, c in ((self.optimizer_g, 1.0), (self.optimizer_c, self._critic_lr_factor())):
            for group in opt.param_groups:
                group["lr"] = base * factor * c

    def _whole_iteration(self) -> Tuple[Dict[str, Any], Tensor]:
        """One iteration through the TrainStep (step modes other than eager)."""
        train = self.train_iteration
        train.critic_step.calls = self.critic_iters  # lazy regularisation's phase, on resume too
        stats = train([self.sampler.next() for _ in range(self.config.n_critic)])
        self.critic_iters += self.config.n_critic
        if stats.critic.penalty is not None:
            self._last_gp = stats.critic.penalty
            self._last_gp_skipped = False
        return {"loss_c": stats.critic.loss, "wasserstein": stats.critic.wasserstein,
                "skipped": False}, stats.loss_g

    def train_step(self) -> Dict[str, float]:
        """n_critic critic updates (a fresh real batch each), then one generator update."""
        self._set_learning_rate()
        self.generator.train()
        self.critic.train()
        if self.train_iteration is not None:
            stats, loss_g = self._whole_iteration()
        else:
            for _ in range(self.config.n_critic):
                stats = self._critic_step(self.sampler.next())
            loss_g = self._generator_step(self.config.batch_size)
        values = torch.stack([stats["loss_c"].float(), loss_g.float(), self._last_gp.float(),
                              stats["wasserstein"].float()])
        # the mean over the ranks, so that every rank logs (and stops on) the same values
        record = dict(zip(HISTORY_KEYS, distributed.all_reduce_mean(values).cpu().tolist()))
        bad = {k for k, v in record.items() if not math.isfinite(v)}
        # An fp16 step the GradScaler skipped had inf/NaN gradients, which also make the penalty
        # (computed from scaled gradients) non-finite: the weights were left alone and the scale
        # backed off, so the run goes on. A non-finite forward value (wasserstein, loss_g) is
        # nothing the scaler can fix.
        handled = set()
        if stats["skipped"]:
            handled.add("loss_c")
        if self._last_gp_skipped:
            handled.add("gp")
        if bad - handled or self._skipped_in_a_row > MAX_SKIPPED_IN_A_ROW:
            raise NonFiniteLossError(self.step + 1, record)
        self.step += 1
        self._update_ema()
        for k, v in record.items():
            self.history[k].append(v)
        return record

    # -- the loop ----------------------------------------------------------------------------

    def checkpoint_path(self, out_dir: str | None = None) -> str | None:
        folder = out_dir or self.config.out_dir
        return os.path.join(folder, CHECKPOINT_NAME) if folder else None

    def checkpoint_bytes(self, steps: int | None = None) -> int:
        """About how large the checkpoint grows by `steps` (default config.steps): the weights,
        two optimiser moments per parameter, the averaged generator, the history and room for
        the rest. An upper estimate, for the free-space check."""
        def size(module):
            if module is None:
                return 0
            return sum(t.numel() * t.element_size()
                       for t in list(module.parameters()) + list(module.buffers()))

        total = self.config.steps if steps is None else int(steps)
        weights = size(self.generator) + size(self.critic)
        return (3 * weights + size(self.generator_ema) + len(HISTORY_KEYS) * 8 * total
                + 2 ** 20)

    def check_output_folder(self, folder: str | None = None, steps: int | None = None) -> None:
        """Before training: the output folder exists, is writable and has room for a checkpoint
        (and its temporary copy while it is replaced). OutputFolderError otherwise."""
        folder = folder or self.config.out_dir
        if not folder or not self.is_main_process:
            return
        with lock_output_folder(folder):
            need = self.checkpoint_bytes(steps)
            free = _free_bytes(folder)
            if free is not None and free < need:
                raise OutputFolderError(
                    f"--out {folder}: {_mb(free)} free on its filesystem, but a checkpoint of "
                    f"this run needs about {_mb(need)}: free some space or choose another output "
                    f"folder (--out)")

    @contextlib.contextmanager
    def _stop_on_signals(self, enabled: bool):
        """SIGINT and SIGTERM ask the loop to stop after the current step (with a checkpoint);
        a second one stops at once, as without this handler. Only in the main thread of a
        single-process run: a distributed run's ranks would reach the collective save at
        different steps."""
        stop = {"signum": None}
        if not enabled or threading.current_thread() is not threading.main_thread():
            yield stop
            return
        previous = {}

        def handler(signum, frame):
            if stop["signum"] is not None:
                raise KeyboardInterrupt
            stop["signum"] = signum

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
        try:
            yield stop
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def _checkpoint_if_new(self, ckpt: str) -> None:
        if self._saved_at != (os.path.realpath(ckpt), self.step):
            self.save_checkpoint(ckpt)

    def train(self, steps: int | None = None, *, progress: bool = False) -> Dict[str, List[float]]:
        """Train until `steps` generator steps in total (default config.steps), checkpointing
        every config.checkpoint_every steps and at the end when config.out_dir is set.

        With an out_dir, before the first step: the folder is locked against other runs
        (lock_output_folder), checked for space, and given a checkpoint of the starting state;
        SIGINT or SIGTERM then stop the run after the current step with a checkpoint of it
        (TrainingInterrupted)."""
        total = self.config.steps if steps is None else int(steps)
        ckpt = self.checkpoint_path()
        every = self.config.checkpoint_every
        lock = (lock_output_folder(self.config.out_dir) if ckpt and self.is_main_process
                else contextlib.nullcontext())
        bar = None
        with lock:
            if ckpt:
                self.check_output_folder(steps=total)
                self._checkpoint_if_new(ckpt)
            if progress and self.is_main_process:
                from tqdm.auto import tqdm

                bar = tqdm(total=total, initial=min(self.step, total), unit="step",
                           dynamic_ncols=True)
            try:
                with self._stop_on_signals(bool(ckpt) and not self.dist.enabled) as stop:
                    while self.step < total:
                        start = time.perf_counter()
                        record = self.train_step()
                        self.train_seconds += time.perf_counter() - start
                        if ckpt and every and self.step % every == 0 and self.step < total:
                            self.save_checkpoint(ckpt)
                        if bar is not None:
                            bar.update(1)
                            if self.step % 10 == 0 or self.step == total:
                                bar.set_postfix(W=f"{record['wasserstein']:.4f}",
                                                GP=f"{record['gp']:.4f}", refresh=False)
                        if stop["signum"] is not None:
                            self._checkpoint_if_new(ckpt)
                            raise TrainingInterrupted(self.step, stop["signum"], ckpt)
            finally:
                if bar is not None:
                    bar.close()
            if ckpt:
                self._checkpoint_if_new(ckpt)
        return self.history

    @torch.no_grad()
    def generate_samples(self, n: int = 64, seed: int | None = None,
                         noise: Tensor | None = None, ema: bool = True) -> Tensor:
        """n generated samples in model space, on the CPU, with the generator in eval mode: the
        averaged generator when ema_decay > 0 (unless ema=False), else the trained one.

        With `seed` (or explicit `noise`) the noise comes from its own generator, so calling this
        during training does not change the training run's random stream.
        """
        if noise is None:
            if seed is None:
                noise = self._noise(n)
            else:
                g = torch.Generator().manual_seed(int(seed))
                noise = torch.randn(n, self.config.latent_dim, generator=g).to(self.device)
        model = self.generator_ema if ema and self.generator_ema is not None else self.generator
        was_training = model.training
        model.eval()
        try:
            chunks = [model(z).float().cpu() for z in noise.split(4096)]
        finally:
            model.train(was_training)
        return torch.cat(chunks)

    # -- checkpoints -------------------------------------------------------------------------

    def _state_is_finite(self) -> bool:
        """Weights, buffers and optimiser state (Adam's moments included) all finite: a NaN in a
        moment is as fatal to a resumed run as one in a weight."""
        for module in (self.generator, self.critic, self.generator_ema):
            if module is None:
                continue
            for t in list(module.parameters()) + list(module.buffers()):
                if t.is_floating_point() and not torch.isfinite(t).all():
                    return False
        for opt in (self.optimizer_g, self.optimizer_c):
            for per_param in opt.state.values():
                for t in per_param.values():
                    if isinstance(t, Tensor) and t.is_floating_point() \
                            and not torch.isfinite(t).all():
                        return False
        return True

    def _data_signature(self) -> Dict[str, Any]:
        """What the models were built for: the sample shape and, for tables, the columns and
        their categories (a category added to a CSV column changes the one-hot width)."""
        sig: Dict[str, Any] = {"shape": list(self.dataset.shape)}
        if isinstance(self.dataset, data_mod.TabularDataset):
            sig["columns"] = list(self.dataset.columns)
            sig["categories"] = {k: list(v) for k, v in self.dataset.categories.items()}
        return sig

    def _check_data_matches(self, state: Dict[str, Any]) -> None:
        """The data and settings of this trainer build models of the checkpoint's shapes; a
        clear error naming what changed otherwise (instead of load_state_dict's size mismatch)."""
        cfg = self.config
        source = f"the data ({cfg.data_path})" if cfg.data_path else f"dataset {cfg.dataset!r}"
        fix = ("resume with the data the run started with, or start a new run on this data "
               "without --resume")
        saved, own = state.get("data"), self._data_signature()
        if isinstance(saved, dict):
            if "categories" in saved and "categories" in own:
                if saved.get("columns") != own["columns"]:
                    raise CheckpointError(f"{source} no longer matches the checkpoint: its "
                                          f"columns were {saved.get('columns')} and are now "
                                          f"{own['columns']}; {fix}")
                for col, cats in own["categories"].items():
                    old = saved["categories"].get(col)
                    if old != cats:
                        added = sorted(set(cats) - set(old or ()))
                        removed = sorted(set(old or ()) - set(cats))
                        raise CheckpointError(
                            f"{source} no longer matches the checkpoint: column {col!r} had "
                            f"the categories {old} and now has {cats} (added {added}, removed "
                            f"{removed}), which changes the models' input and output width; "
                            f"{fix}")
            if saved.get("shape") != own["shape"]:
                raise CheckpointError(f"{source} no longer matches the checkpoint: a sample had "
                                      f"shape {saved.get('shape')} and now has {own['shape']}; "
                                      f"{fix}")
        # checkpoints without a signature, and settings that change the models: by the weights
        for name, module in (("generator", self.generator), ("critic", self.critic)):
            mine = module.state_dict()
            theirs = state[name]
            for key in sorted(set(mine) | set(theirs)):
                a, b = mine.get(key), theirs.get(key)
                if a is None or b is None or tuple(a.shape) != tuple(b.shape):
                    shown = lambda t: "absent" if t is None else list(t.shape)  # noqa: E731
                    raise CheckpointError(
                        f"the checkpoint's {name} does not fit the model that {source} and "
                        f"these settings build: {key} is {shown(b)} in the checkpoint and "
                        f"{shown(a)} here (did the data change since the checkpoint was "
                        f"written?); {fix}")

    def state_dict(self) -> Dict[str, Any]:
        """The whole training state. In a distributed run every rank must call it (it gathers
        each rank's RNG and sampler state under "ranks")."""
        own = {"rng": _rng_state(), "sampler": self.sampler.state_dict()}
        ranks = distributed.gather_objects(own) if self.dist.enabled else []
        state = {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "step": self.step,
            "critic_iters": self.critic_iters,
            "train_seconds": self.train_seconds,
            "generator": self.generator.state_dict(),
            "critic": self.critic.state_dict(),
            "optimizer_g": _portable(self.optimizer_g.state_dict()),
            "optimizer_c": _portable(self.optimizer_c.state_dict()),
            "sampler": self.sampler.state_dict(),
            "rng": _rng_state(),
            "fixed_noise": self.fixed_noise.cpu(),
            "history": {k: torch.tensor(v, dtype=torch.float64) for k, v in self.history.items()},
            "world_size": self.world_size,
            "ranks": ranks,
            "last_gp": float(self._last_gp),
            "amp_skipped_steps": self.amp_skipped_steps,
            "data": self._data_signature(),
        }
        if self.generator_ema is not None:
            state["generator_ema"] = self.generator_ema.state_dict()
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
            state["scaler_g"] = self.scaler_g.state_dict()
        return state

    def load_state_dict(self, state: Dict[str, Any], path: str = "the checkpoint") -> None:
        """Restore a checkpoint's state; it is checked first (check_checkpoint, and against the
        models this trainer's data builds), so a refused one changes nothing."""
        check_checkpoint(state, path)
        self._check_data_matches(state)
        self.generator.load_state_dict(state["generator"])
        self.critic.load_state_dict(state["critic"])
        if self.generator_ema is not None:
            if "generator_ema" not in state:
                raise ValueError("the checkpoint has no averaged generator (generator_ema) but "
                                 "the config has ema_decay > 0")
            self.generator_ema.load_state_dict(state["generator_ema"])
        self.optimizer_g.load_state_dict(state["optimizer_g"])
        self.optimizer_c.load_state_dict(state["optimizer_c"])
        self.sampler.load_state_dict(state["sampler"])
        self.fixed_noise = state["fixed_noise"].to(self.device)
        self.step = int(state["step"])
        self.critic_iters = int(state["critic_iters"])
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.history = {k: state["history"][k].tolist() for k in HISTORY_KEYS}
        self._last_gp = torch.tensor(float(state.get("last_gp", 0.0)), device=self.device)
        self.amp_skipped_steps = int(state.get("amp_skipped_steps", 0))
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
            self.scaler_g.load_state_dict(state["scaler_g"])
        ranks = state.get("ranks") or []
        if not self.dist.enabled:
            _set_rng_state(state["rng"])
        elif len(ranks) == self.world_size:
            self.sampler.load_state_dict(ranks[self.rank]["sampler"])
            _set_rng_state(ranks[self.rank]["rng"])
        else:
            # saved with another number of ranks: fresh streams, a function of (seed, rank, step)
            seed = self.config.seed
            _seed_all(distributed.derive_seed(seed, self.rank, self.step))
            self.sampler.generator.manual_seed(
                distributed.derive_seed(seed * 1009 + 17, self.rank, self.step))

    def save_checkpoint(self, path: str) -> None:
        """Write the whole training state atomically; refuses a state with NaN/inf weights or
        optimiser state, so a good checkpoint is never replaced by a broken one. Collective in a
        distributed run: every rank calls it, rank 0 writes."""
        # the weights are identical on every rank, so every rank decides the same here
        if not self._state_is_finite():
            raise NonFiniteLossError(self.step, {"weights": float("nan")})
        state = self.state_dict()
        if self.is_main_process:
            atomic_save(state, path)
        distributed.barrier()
        self._saved_at = (os.path.realpath(path), self.step)

    @staticmethod
    def read_checkpoint(path: str, map_location: Any = "cpu", *,
                        check: bool = True) -> Dict[str, Any]:
        """The checkpoint at `path`, checked by check_checkpoint (unless check=False): a file
        that is not ours or holds NaN/inf is a CheckpointError (a ValueError) saying so."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint not found: {path}")
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"{path}: not a readable wgangp_fast checkpoint ({exc})") \
                from None
        return check_checkpoint(state, path) if check else state

    @classmethod
    def from_checkpoint(cls, path: str, dataset: data_mod.Dataset | None = None,
                        **overrides: Any) -> WGANGPTrainer:
        """A trainer in exactly the state saved at `path`. `overrides` may change settings that
        do not alter the models or the data (steps, out_dir, checkpoint_every, device, backend)."""
        state = cls.read_checkpoint(path)
        allowed = {"steps", "out_dir", "checkpoint_every", "device", "backend", "n_eval_samples",
                   "step_mode"}
        bad = sorted(k for k, v in overrides.items() if v is not None and k not in allowed)
        if bad:
            raise ValueError(f"cannot change {', '.join(bad)} when resuming (only "
                             f"{', '.join(sorted(allowed))})")
        try:
            cfg = WGANGPConfig.from_dict(state["config"])
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: the checkpoint's config is not one this version "
                                  f"can read ({exc})") from None
        cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
        trainer = cls(cfg, dataset=dataset)
        trainer.load_state_dict(state, path)
        trainer._saved_at = (os.path.realpath(path), trainer.step)
        return trainer

    # -- outputs -----------------------------------------------------------------------------

    def evaluate(self, samples: np.ndarray | None = None, ema: bool = True) -> Dict[str, Any]:
        """The dataset's quality metrics (wgangp_fast.train.metrics) on n_eval_samples samples (of the
        averaged generator when there is one, unless ema=False)."""
        if samples is None:
            samples = self.generate_samples(self.config.n_eval_samples,
                                            seed=self.config.seed + 2, ema=ema).numpy()
        return metrics_mod.evaluate(self.dataset, samples, seed=self.config.seed)

    def write_outputs(self, out_dir: str | None = None) -> Dict[str, Any]:
        """samples.npy, samples.png, curves.png, metrics.json, history.csv, config.json (and
        samples.csv for tables) in out_dir. Returns the metrics."""
        folder = out_dir or self.config.out_dir
        if not folder:
            raise ValueError("write_outputs needs an out_dir")
        if not self.is_main_process:
            return {}
        os.makedirs(folder, exist_ok=True)
        n = max(2500, self.config.n_eval_samples)
        samples = self.generate_samples(n, seed=self.config.seed + 2).numpy()
        metrics = self.evaluate(samples[: self.config.n_eval_samples])
        metrics.update({
            "dataset": self.config.dataset, "model": self.model_kind,
            "method": self.config.method, "steps": self.step,
            "critic_iters": self.critic_iters,
            "train_seconds": round(self.train_seconds, 3),
            "steps_per_second": round(self.step / self.train_seconds, 3)
            if self.train_seconds > 0 else None,
            "device": str(self.device),
            "world_size": self.world_size,
            "precision": self.config.precision,
            "step_mode": self.step_mode,
            "gp_every": self.config.gp_every,
            "ema_decay": self.config.ema_decay,
        })
        if self.generator_ema is not None:
            # the same metrics for the trained (not averaged) weights, to show what EMA adds
            raw = self.evaluate(ema=False)
            metrics["raw_generator"] = {k: v for k, v in raw.items()
                                        if not isinstance(v, (list, dict))}
        if self.scaler is not None:
            metrics["amp_skipped_steps"] = self.amp_skipped_steps
        if self.history["wasserstein"]:
            for key, name in (("wasserstein", "final_wasserstein_estimate"), ("gp", "final_gp")):
                # fp16 steps the scaler skipped may have logged an inf penalty: left out
                tail = [v for v in self.history[key][-100:] if math.isfinite(v)]
                if tail:
                    metrics[name] = float(np.mean(tail))
        np.save(os.path.join(folder, "samples.npy"), self.dataset.decode(samples))
        if isinstance(self.dataset, data_mod.TabularDataset):
            self.dataset.write_csv(samples, os.path.join(folder, "samples.csv"))
        with open(os.path.join(folder, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2)
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(self.config.to_dict(), f, indent=2)
        with open(os.path.join(folder, "history.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(("step",) + HISTORY_KEYS)
            for i, row in enumerate(zip(*(self.history[k] for k in HISTORY_KEYS)), start=1):
                writer.writerow((i,) + tuple(f"{v:.6g}" for v in row))
        plot_curves(self.history, os.path.join(folder, "curves.png"),
                    title=f"{self.config.dataset} / {self.config.method}")
        grid = self.generate_samples(noise=self.fixed_noise).numpy()
        plot_samples(self.dataset, samples, grid, os.path.join(folder, "samples.png"),
                     title=f"{self.config.dataset}: step {self.step}")
        return metrics


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
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_samples(dataset: data_mod.Dataset, samples: np.ndarray, grid: np.ndarray, path: str,
                 title: str = "") -> None:
    """Images: an 8x8 grid from the fixed noise. 2-D points: generated over real samples.
    Tables: real vs generated marginals of the first columns."""
    plt = _pyplot()
    if dataset.kind == "image":
        imgs = (np.clip(grid, -1, 1) + 1) / 2
        n = int(math.ceil(math.sqrt(len(imgs))))
        c, h, w = imgs.shape[1:]
        canvas = np.ones((n * (h + 1) + 1, n * (w + 1) + 1, c))
        for i, img in enumerate(imgs):
            r, q = divmod(i, n)
            canvas[1 + r * (h + 1): 1 + r * (h + 1) + h,
                   1 + q * (w + 1): 1 + q * (w + 1) + w] = img.transpose(1, 2, 0)
        fig, ax = plt.subplots(figsize=(6, 6))
        ax.imshow(canvas[..., 0] if c == 1 else canvas, cmap="gray" if c == 1 else None,
                  vmin=0, vmax=1, interpolation="nearest")
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
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
