"""FID, KID and IS of generated images against the real set (the `metrics` extra: torchmetrics,
and torch-fidelity for the Inception network).

One forward of a feature network per image gives its pooled features (FID, KID) and, where the
network has them, its class logits (IS); the sums and kernels are torchmetrics' own
(FrechetInceptionDistance, KernelInceptionDistance, InceptionScore), fed the features through an
identity "extractor". `ImageQuality` takes any such network: Inception-v3 with the FID weights
(`inception_network`), or a small stand-in in the tests, through the same code.

The Inception weights (weights-inception-2015-12-05-6726825d.pth, torch-fidelity's conversion of
the TensorFlow FID network) come from `--inception-weights PATH`, else the torch hub cache
(torch.hub.get_dir()/checkpoints), else torch-fidelity's download where its host answers within
a few seconds. Every file is read with torch.load(weights_only=True): torch-fidelity's own
loader would unpickle it in full, so it runs under TORCH_FORCE_WEIGHTS_ONLY_LOAD. Where no
weights can be had, `inception_network` raises `MetricsUnavailable` with one line saying what
was looked for and where, and the run goes on without these metrics.
"""

from __future__ import annotations

import contextlib
import os
import socket
import warnings
from functools import lru_cache
from typing import Callable, Dict, Iterable, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["INCEPTION_FILE", "ImageQuality", "MetricsUnavailable", "inception_network",
           "to_uint8_rgb"]

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
DOWNLOAD_HOST = ("github.com", 443)
EXTRA = "pip install 'wgangp_fast[metrics]'"


class MetricsUnavailable(RuntimeError):
    """FID / KID cannot be measured here; the message is the one line a run shows."""


def _require_torchmetrics():
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.inception import InceptionScore
        from torchmetrics.image.kid import KernelInceptionDistance
    except ImportError:
        raise MetricsUnavailable(f"FID / KID skipped: torchmetrics is not installed ({EXTRA})"
                                 ) from None
    return FrechetInceptionDistance, KernelInceptionDistance, InceptionScore


def to_uint8_rgb(x: Tensor) -> Tensor:
    """Model-space images in [-1, 1], [N, C, H, W] -> uint8 [N, 3, H, W] (grey repeated)."""
    x = ((x.float().clamp(-1, 1) + 1) * 127.5).round_().to(torch.uint8)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] == 4:
        x = x[:, :3]
    return x.contiguous()


class _Given(nn.Module):
    """The identity, as torchmetrics' feature extractor: the features are computed before."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, x: Tensor) -> Tensor:
        return x


class ImageQuality:
    """FID and KID (and IS where `network` gives logits) of generated images against real ones.

    network(uint8 [N, 3, H, W]) -> features [N, d] or (features [N, d], logits [N, k]).
    `set_real` takes the real images once; `measure` the generated ones, each time. KID is the
    mean (and std) over `kid_subsets` random subsets of min(kid_subset_size, n) samples of the
    unbiased MMD^2 with the kernel (x.y / d + 1)^3; its draws come from a generator seeded with
    `seed`, never the training run's random stream."""

    def __init__(self, network: nn.Module, *, device: torch.device | str = "cpu",
                 batch_size: int = 100, kid_subset_size: int = 1000, kid_subsets: int = 100,
                 is_splits: int = 10, seed: int = 0) -> None:
        self.fid_cls, self.kid_cls, self.is_cls = _require_torchmetrics()
        self.network = network.eval().requires_grad_(False).to(device)
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.kid_subset_size, self.kid_subsets = int(kid_subset_size), int(kid_subsets)
        self.is_splits = int(is_splits)
        self.seed = int(seed)
        self.real: Optional[Tuple[Tensor, Optional[Tensor]]] = None

    @torch.no_grad()
    def features(self, images: Iterable[Tensor]) -> Tuple[Tensor, Optional[Tensor]]:
        """(features, logits or None) of uint8 image batches, in float64 on the CPU."""
        feats, logits = [], []
        for batch in images:
            for part in batch.split(self.batch_size):
                out = self.network(part.to(self.device))
                f, lg = out if isinstance(out, (tuple, list)) else (out, None)
                feats.append(f.reshape(f.shape[0], -1).double().cpu())
                if lg is not None:
                    logits.append(lg.reshape(lg.shape[0], -1).double().cpu())
        if not feats:
            raise ValueError("no images to measure")
        return torch.cat(feats), (torch.cat(logits) if logits else None)

    def set_real(self, images: Iterable[Tensor]) -> None:
        self.real = self.features(images)

    def measure(self, images: Iterable[Tensor]) -> Dict[str, float]:
        """fid, kid_mean, kid_std (and inception_score_mean / _std) of `images` (uint8 batches)
        against the real ones."""
        if self.real is None:
            raise RuntimeError("set_real() first: the real images' features")
        real, _ = self.real
        fake, logits = self.features(images)
        n = min(len(real), len(fake))
        if n < 2:
            raise ValueError(f"FID needs at least 2 real and 2 generated images, got "
                             f"{len(real)} and {len(fake)}")
        d = real.shape[1]
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            # "will save all extracted features in buffer": the features, as intended
            warnings.filterwarnings("ignore", message=".*save all extracted features.*")
            torch.manual_seed(self.seed)
            fid = self.fid_cls(feature=_Given(d), normalize=True)
            fid.update(real, real=True)
            fid.update(fake, real=False)
            out = {"fid": float(fid.compute())}
            subset = min(self.kid_subset_size, n)
            kid = self.kid_cls(feature=_Given(d), subsets=self.kid_subsets, subset_size=subset,
                               normalize=True)
            kid.update(real, real=True)
            kid.update(fake, real=False)
            kid_mean, kid_std = kid.compute()
            out.update(kid_mean=float(kid_mean), kid_std=float(kid_std), kid_subset_size=subset)
            if logits is not None:
                splits = max(1, min(self.is_splits, len(logits) // 2))
                # normalize=False: True would scale the given logits to bytes
                score = self.is_cls(feature=_Given(logits.shape[1]), splits=splits,
                                    normalize=False)
                score.update(logits)
                warnings.filterwarnings("ignore", message=".*degrees of freedom.*")
                is_mean, is_std = score.compute()
                out["inception_score_mean"] = float(is_mean)
                if splits > 1:  # one split has no spread
                    out["inception_score_std"] = float(is_std)
        out.update(fid_real_samples=len(real), fid_samples=len(fake))
        return out


@contextlib.contextmanager
def _weights_only_loads():
    """Every torch.load in the block reads weights only (torch-fidelity passes
    weights_only=False for a user's file)."""
    saved = {k: os.environ.get(k) for k in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD",
                                            "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")}
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@lru_cache(maxsize=4)
def _reachable(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_weights_path() -> str:
    return os.path.join(torch.hub.get_dir(), "checkpoints", INCEPTION_FILE)


class _Inception(nn.Module):
    """torch-fidelity's Inception-v3 -> (2048 pool features, 1008 unbiased logits)."""

    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        self.extractor = extractor

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        pool, logits = self.extractor(x)
        return pool, logits


def inception_network(weights: Optional[str] = None, *, timeout: float = 3.0,
                      host: Tuple[str, int] = DOWNLOAD_HOST) -> nn.Module:
    """Inception-v3 for FID / KID / IS, or MetricsUnavailable saying why not (one line)."""
    _require_torchmetrics()
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError:
        raise MetricsUnavailable(f"FID / KID skipped: torch-fidelity (the Inception network) is "
                                 f"not installed ({EXTRA})") from None
    if weights is not None:
        if not os.path.isfile(weights):
            raise MetricsUnavailable(f"FID / KID skipped: --inception-weights {weights}: no such "
                                     f"file")
        path: Optional[str] = weights
    elif os.path.isfile(hub_weights_path()):
        path = hub_weights_path()
    elif _reachable(host[0], host[1], timeout):
        path = None  # torch-fidelity downloads it into the hub cache
    else:
        raise MetricsUnavailable(
            f"FID / KID skipped: the Inception weights {INCEPTION_FILE} are not in the torch hub "
            f"cache ({os.path.dirname(hub_weights_path())}) and {host[0]} (the download) does not "
            f"answer; give the file with --inception-weights PATH")
    try:
        with _weights_only_loads():
            extractor = FeatureExtractorInceptionV3("inception-v3-compat",
                                                    ["2048", "logits_unbiased"],
                                                    feature_extractor_weights_path=path)
    except Exception as exc:
        where = path or f"the download to {os.path.dirname(hub_weights_path())}"
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MetricsUnavailable(f"FID / KID skipped: the Inception weights from {where} could "
                                 f"not be loaded as weights only ({type(exc).__name__}: {text})"
                                 ) from None
    return _Inception(extractor)


def real_batches(dataset, n: int, seed: int, batch: int = 500) -> Iterable[Tensor]:
    """n real images of `dataset` (all of them when it has fewer) as uint8 RGB batches, without
    a float copy of a uint8 set."""
    pixels = getattr(dataset, "pixels", None)
    if pixels is not None:
        total = len(pixels)
        if n >= total:
            idx = np.arange(total)
        else:
            g = torch.Generator().manual_seed(seed)
            idx = np.sort(torch.randperm(total, generator=g)[:n].numpy())
        for i in range(0, len(idx), batch):
            rows = torch.from_numpy(np.ascontiguousarray(pixels[idx[i:i + batch]]))
            yield rows.expand(-1, 3, -1, -1).contiguous() if rows.shape[1] == 1 else rows[:, :3]
        return
    real = torch.from_numpy(np.asarray(dataset.reference(n, seed=seed), dtype=np.float32))
    for part in real.split(batch):
        yield to_uint8_rgb(part)


def generated_batches(generate: Callable[[int], Tensor], n: int,
                      batch: int = 500) -> Iterable[Tensor]:
    """n generated images, generate(k) -> model-space [k, C, H, W], as uint8 RGB batches."""
    done = 0
    while done < n:
        k = min(batch, n - done)
        yield to_uint8_rgb(generate(k))
        done += k
