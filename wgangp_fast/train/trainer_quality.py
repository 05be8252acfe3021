"""FID, KID and IS during and after an image run (wgangp_fast.train.fid), and the run's one-line
notes. A mixin of WGANGPTrainer."""

from __future__ import annotations

import warnings
from typing import Any, Dict

from torch import Tensor, nn

__all__ = ["ImageQualityRun"]


class ImageQualityRun:
    """WGANGPTrainer's FID / KID / IS: measured at the end of image runs (fid_samples) and every
    fid_every steps, with Inception-v3 or a network given to use_feature_network."""

    def note(self, message: str) -> None:
        """A one-line remark of the run (FID skipped, say): to `on_note` when set (the command
        line prints it), else a RuntimeWarning."""
        self.notes.append(message)
        if self.on_note is not None:
            self.on_note(message)
        else:
            warnings.warn(message, RuntimeWarning, stacklevel=2)

    def use_feature_network(self, network: nn.Module) -> None:
        """Measure FID / KID (and IS) with `network` (uint8 [N, 3, H, W] -> features, or
        (features, logits)) instead of Inception-v3: a stand-in, or another network."""
        from . import fid as fid_mod

        quality = fid_mod.ImageQuality(network, device=self.device, seed=self.config.seed)
        quality.set_real(fid_mod.real_batches(self.dataset, max(2, self.config.fid_samples),
                                              seed=self.config.seed))
        self._image_quality = quality

    def _quality(self):
        """The ImageQuality of this run, built at the first call; False (said once) where the
        metrics cannot be measured."""
        if self._image_quality is None:
            from . import fid as fid_mod

            try:
                self.use_feature_network(fid_mod.inception_network(
                    self.config.inception_weights))
            except fid_mod.MetricsUnavailable as exc:
                self._image_quality = False
                self.note(str(exc))
        return self._image_quality

    def image_quality(self, n: int | None = None) -> Dict[str, Any]:
        """FID, KID (and IS) of n generated images (default fid_samples) against as many real
        ones (all of them, for a smaller set), for image runs; {} for other data, for n = 0, or
        where the metrics cannot be measured (said once). The generated images come from seeds
        of their own, the measurement from its own random stream: the training run is not
        changed by it."""
        n = self.config.fid_samples if n is None else int(n)
        if n <= 0 or self.dataset.kind != "image" or not self.is_main_process:
            return {}
        quality = self._quality()
        if not quality:
            return {}
        from . import fid as fid_mod

        chunk = iter(range(1 << 30))
        seed = self.config.seed + 3

        def generate(k: int) -> Tensor:
            return self.generate_samples(k, seed=seed * 1_000_003 + next(chunk))

        return quality.measure(fid_mod.generated_batches(generate, max(2, n)))

    def _measure_on_schedule(self) -> None:
        every = self.config.fid_every
        if not every or self.step % every or self.dataset.kind != "image":
            return
        figures = self.image_quality()
        if figures:
            self.fid_history.append({"step": self.step, **figures})
            self.note(f"step {self.step}: FID {figures['fid']:.4g}, KID "
                      f"{figures['kid_mean']:.4g} +- {figures['kid_std']:.2g}")
