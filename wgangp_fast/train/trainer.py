"""`WGANGPTrainer`: Algorithm 1 of Gulrajani et al. (2017) around the fused penalty. It builds the
data, models and optimisers of a `WGANGPConfig`, runs each iteration (n_critic critic steps, each
on a FRESH real batch and fresh noise, then one generator step) as one wgangp_fast.steps.TrainStep
in the configured step mode (the critic loss, the penalty, the hooks and the optimiser steps all
live there), and loops with checkpoints, signals and outputs.

Lipschitz methods: "gp" (wgangp_fast.gradient_penalty), "lp" (one-sided: only gradient norms above
1 are penalised, Petzka et al.), "r1" / "r2" (zero-centred penalties on real / fake samples,
Mescheder et al., gamma = lambda_gp), "dragan" (norm 1 around perturbed real samples, Kodali et
al.), "clip" (the original WGAN: RMSprop and weights clamped to [-c, c]) and "sn" (spectrally
normalised critic, no penalty). `pac` > 1 packs consecutive samples into one critic input (PacGAN /
CTGAN) with one penalty group per pack.

`ema_decay` d > 0 keeps an exponential moving average of the generator's weights, updated after
every generator step (ema <- d' ema + (1 - d') weights, d' = min(d, (1 + t) / (10 + t)) after t
updates); samples, pictures and metrics come from it (Yazici et al., 2019): it averages out the
oscillation of the generator around the equilibrium, which otherwise smears tight modes.

Images and classes: `model` "resnet" is the WGAN-GP paper's ResNet pair (models_resnet), "auto"
gives images conv models below 32x32 and resnet from 32x32 up. `conditional` trains G(z, label)
against a projection critic D(x, label) on a labelled dataset (trainer_classes): each critic step
draws a real batch with its labels and generates the fakes for the same labels, so the penalty
interpolates samples of one class. Image runs measure FID / KID / IS at the end and every
`fid_every` steps (trainer_quality, fid).

Scale and precision:
- `precision` "bf16" / "fp16": the forwards run under torch.autocast; fp16 adds a GradScaler per
  optimiser. A step the scaler skips for overflow does not stop the run; a non-finite forward
  value, or one in fp32 / bf16, does (NonFiniteLossError).
- `gp_every` k (lazy regularisation, StyleGAN2): the penalty on every k-th critic step only,
  weighted by k; `lazy_adam_correction` scales the critic's Adam lr by c = k / (k + 1) and its betas
  to (beta1^c, beta2^c).
- Data parallel under torchrun (wgangp_fast.train.distributed): both models in
  DistributedDataParallel, whose gradients the steps average over the ranks before each update, in
  every step mode; each rank draws its own data and noise, `batch_size` is per process, logged
  losses are the mean over ranks, and only rank 0 writes files.

Logged values (losses, penalty, gradient norm, learning rates) stay on the device and are read
once per `log_every` steps (flush_logs), and before every checkpoint: a non-finite loss stops the
run at that read, and no checkpoint is written past it. With an output folder they go to
history.csv and TensorBoard as they are read (wgangp_fast.train.logs).

Checkpoints (wgangp_fast.train.checkpoint) hold everything needed to resume bit for bit: both
models, both optimisers, the RNG states, the data sampler and the step counters; a non-finite
state is never saved. A run with an output folder locks it, checks it for space, writes the
starting state's checkpoint before the first step and, on SIGINT or SIGTERM, stops after the
current step with a checkpoint of it.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import threading
import time
from typing import Any, Dict, List, Tuple

import numpy as np
import torch
from torch import Tensor

from . import checkpoint as ckpt_mod
from . import data as data_mod
from . import distributed, schedule
from . import logs as logs_mod
from . import metrics as metrics_mod
from . import outputs as outputs_mod
from .config import HISTORY_KEYS, LOSS_KEYS, WGANGPConfig
from .folder import CHECKPOINT_NAME, check_free_space, lock_output_folder
from .trainer_build import RunConstruction
from .trainer_classes import ConditionalRun
from .trainer_quality import ImageQualityRun
from .trainer_state import CheckpointedRun, NonFiniteLossError

__all__ = ["NonFiniteLossError", "TrainingInterrupted", "WGANGPTrainer"]

# consecutive critic steps the fp16 GradScaler may skip before the run is declared broken: backing
# off from the default scale 2^16 to 1 takes 16
MAX_SKIPPED_IN_A_ROW = 64


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the run between two steps, after a checkpoint of that step."""

    def __init__(self, step: int, signum: int, checkpoint: str | None) -> None:
        self.step, self.signum, self.checkpoint = step, signum, checkpoint
        name = signal.Signals(signum).name
        where = f"; checkpoint saved to {checkpoint}" if checkpoint else ""
        super().__init__(f"{name} stopped the run after step {step}{where}")


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


@contextlib.contextmanager
def _stop_on_signals(enabled: bool):
    """SIGINT and SIGTERM ask the loop to stop after the current step (with a checkpoint); a
    second one stops at once, as without this handler. Only in the main thread of a
    single-process run: a distributed run's ranks would reach the collective save at different
    steps."""
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


class WGANGPTrainer(RunConstruction, CheckpointedRun, ConditionalRun, ImageQualityRun):
    """Builds the data, models and optimisers of a `WGANGPConfig` and trains them.

        trainer = WGANGPTrainer(WGANGPConfig.for_dataset("ring8", steps=2000))
        trainer.train(progress=True)
        samples = trainer.generate_samples(2500)
    """

    def __init__(self, config: WGANGPConfig | None = None,
                 dataset: data_mod.Dataset | None = None, *,
                 step_options: Dict[str, Any] | None = None) -> None:
        self.config = (config or WGANGPConfig()).validate()
        cfg = self.config
        self.dist, dist_device = distributed.setup(cfg.device)
        self.rank = self.dist.rank
        self.world_size = self.dist.world_size
        self.is_main_process = self.dist.is_main
        self.device = dist_device if dist_device is not None else _resolve_device(cfg.device)
        if cfg.precision == "bf16" and self.device.type == "cuda" \
                and not torch.cuda.is_bf16_supported():
            raise ValueError(f"precision bf16 is not supported on {self.device}: use fp16")
        # fp16: a GradScaler per optimiser, each backing off on its own overflows; bfloat16 has
        # float32's exponent range and needs none. Scale 2^15 to start: the critic's last bias
        # gets d(S * mean D(x))/db = S from each of its passes over real and fake, summed in
        # float16, which overflows at torch's default S = 2^16 (float16 tops out at 65504), so
        # the first update would always be skipped.
        scalers = (None, None)
        if cfg.precision == "fp16":
            scalers = tuple(torch.amp.GradScaler(self.device.type, init_scale=2.0 ** 15)
                            for _ in range(2))
        self.amp_skipped_steps = 0

        if cfg.tensorboard and logs_mod.missing_tensorboard():
            raise ValueError(logs_mod.missing_tensorboard())

        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)

        # one-line remarks on how the data was read (a cache built, grey files converted)
        self.data_notes: List[str] = []
        self.dataset = dataset if dataset is not None else data_mod.load_dataset(
            cfg.dataset, cfg.data_path, image_size=cfg.image_size, npz_key=cfg.npz_key,
            categorical=cfg.categorical, label_column=cfg.label_column,
            table_transform=cfg.table_transform,
            image_cache=cfg.image_cache, max_image_pixels=cfg.max_image_pixels,
            decode_workers=cfg.decode_workers, log=self.data_notes.append)
        self.data_notes += list(getattr(self.dataset, "notes", ()))
        self.class_names = self._check_conditional()
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
            ckpt_mod.seed_all(distributed.derive_seed(cfg.seed, self.rank, 0))
        self.critic_ddp = distributed.wrap(self.critic, self.device)
        self.generator_ddp = distributed.wrap(self.generator, self.device)
        # Distinct from the global seed stream so that the data stream is not correlated with
        # model initialisation; each rank of a data-parallel run adds its rank.
        self.sampler = data_mod.BatchSampler(self.dataset, cfg.batch_size,
                                             seed=cfg.seed * 1009 + 17 + self.rank,
                                             device=self.device)
        noise_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.fixed_noise = torch.randn(64, cfg.latent_dim, generator=noise_gen).to(self.device)
        # FID / KID / IS: the measuring network and real features, built at the first use;
        # (step, figures) of each measurement during training
        self._image_quality: Any = None
        self.fid_history: List[Dict[str, float]] = []
        self.train_iteration = self._build_train_step(scalers, step_options)

        self.notes: List[str] = []
        self.on_note = None
        self.step = 0
        self.critic_iters = 0
        self.train_seconds = 0.0
        self.history: Dict[str, List[float]] = {k: [] for k in HISTORY_KEYS}
        # the penalty of the last regularised critic step, in its own units (not times gp_every),
        # and its mean per-group gradient norm (nan until a step carried a penalty)
        self._last_gp = torch.zeros((), device=self.device)
        self._last_norm = torch.full((), float("nan"), device=self.device)
        self._last_gp_skipped = False
        # the steps taken but not yet read from the device: (their loss values, a device
        # tensor; their learning rates; the values a skipped fp16 step may leave non-finite)
        self._pending: List[Tuple[Tensor, Tuple[float, float], frozenset]] = []
        # the live logs (history.csv, TensorBoard) while train() runs with an output folder
        self._log: logs_mod.RunLog | None = None
        # the linear decay's current segment (start step, lr factor there): it falls to 0 at
        # the horizon (config.decay_horizon()); a resume that moves the horizon starts a new one
        self._lr_segment: Tuple[int, float] = schedule.FIRST_SEGMENT
        # (real path, step) of the checkpoint on disk that holds this exact state, if any
        self._saved_at: Tuple[str, int] | None = None

    # -- one step ----------------------------------------------------------------------------

    def _noise(self, n: int) -> Tensor:
        return torch.randn(n, self.config.latent_dim, device=self.device)

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

    def decay_factor(self, step: int) -> float:
        """lr_decay "linear": the learning rate's factor at `step` (wgangp_fast.train.schedule);
        1 without a decay."""
        horizon = self.config.decay_horizon()
        return 1.0 if horizon is None else schedule.decay_factor(step, horizon, self._lr_segment)

    def learning_rates(self, step: int | None = None) -> Tuple[float, float]:
        """(generator, critic) learning rates at `step` (default: the next step). lr_warmup K:
        lr * min(1, (step + 1) / K) over the first K steps (a steep critic's first updates can
        otherwise kill every ReLU of a generator trained at a high lr, Goyal et al., 2017), times
        decay_factor(step); the critic's times the lazy-regularisation factor. A function of the
        step (and the recorded horizon) alone, so a resumed run follows the same schedule."""
        cfg = self.config
        step = self.step if step is None else step
        base = cfg.clip_lr if cfg.method == "clip" else cfg.lr
        factor = self.decay_factor(step)
        if cfg.lr_warmup:
            factor *= min(1.0, (step + 1) / cfg.lr_warmup)
        return base * factor, base * factor * self.lazy_adam_factor()

    def _set_learning_rate(self) -> Tuple[float, float]:
        lrs = self.learning_rates()
        cfg = self.config
        if cfg.lr_decay == "linear" or cfg.lr_warmup:
            for opt, lr in zip((self.optimizer_g, self.optimizer_c), lrs):
                for group in opt.param_groups:
                    group["lr"] = lr
        return lrs

    def train_step(self) -> Dict[str, float]:
        """One iteration: n_critic critic updates (a fresh real batch each), then one generator
        update, through the TrainStep; returns its logged values (read from the device now:
        train() reads them once per log_every steps instead)."""
        self._iterate()
        return self.flush_logs()[-1][1]

    def _iterate(self) -> None:
        """One iteration, its logged values left on the device (flush_logs reads them)."""
        lrs = self._set_learning_rate()
        self.generator.train()
        self.critic.train()
        train = self.train_iteration
        c, g = train.critic_step, train.generator_step
        c.calls = self.critic_iters  # lazy regularisation's phase, on resume too
        skipped_before = c.skipped_steps + g.skipped_steps
        if self.class_names is None:
            stats = train([self.sampler.next() for _ in range(self.config.n_critic)])
        else:
            reals, labels = zip(*(self.sampler.next_labelled()
                                  for _ in range(self.config.n_critic)))
            stats = train(list(reals), list(labels), self.sampler.next_labels())
        self.critic_iters += self.config.n_critic
        self.amp_skipped_steps += c.skipped_steps + g.skipped_steps - skipped_before
        if stats.critic.penalty is not None:
            self._last_gp = stats.critic.penalty
            self._last_gp_skipped = stats.penalty_skipped
            if stats.critic.norms is not None:
                self._last_norm = stats.critic.norms.float().mean()
        values = torch.stack([stats.critic.loss.float(), stats.loss_g.float(),
                              self._last_gp.float(), stats.critic.wasserstein.float(),
                              self._last_norm.float()])
        # An fp16 step the GradScaler skipped had inf/NaN gradients, which also make the penalty
        # (computed from scaled gradients) non-finite: the weights were left alone and the scale
        # backed off, so the run goes on. A non-finite forward value (wasserstein, loss_g) is
        # nothing the scaler can fix.
        handled = set()
        if stats.critic.skipped:
            handled.add("loss_c")
        if self._last_gp_skipped:
            handled.add("gp")
        self._pending.append((values, lrs, frozenset(handled)))
        self.step += 1
        self._update_ema()
        if c.skipped_in_a_row > MAX_SKIPPED_IN_A_ROW:
            rows = self.flush_logs()
            raise NonFiniteLossError(self.step, {k: rows[-1][1][k] for k in LOSS_KEYS})

    def flush_logs(self) -> List[Tuple[int, Dict[str, float]]]:
        """Read the logged values of the steps taken since the last call from the device (one
        transfer, and in a distributed run one all-reduce, for all of them), append them to the
        history and the live logs, and return them as (step, record) rows. A non-finite loss
        among them is a NonFiniteLossError naming the first such step (the rows before it are
        kept): train() calls this every log_every steps and before every checkpoint, so a run
        stops at most log_every - 1 steps after its first non-finite loss, and never saves a
        state past it. Collective in a distributed run."""
        pending, self._pending = self._pending, []
        if not pending:
            return []
        # the mean over the ranks, so that every rank logs (and stops on) the same values
        values = distributed.all_reduce_mean(torch.stack([v for v, _, _ in pending]))
        first = self.step - len(pending) + 1
        rows: List[Tuple[int, Dict[str, float]]] = []
        error = None
        for i, (row, (_, (lr_g, lr_c), handled)) in enumerate(zip(values.cpu().tolist(),
                                                                   pending)):
            record = dict(zip(LOSS_KEYS + ("grad_norm",), row), lr_g=lr_g, lr_c=lr_c)
            if {k for k in LOSS_KEYS if not math.isfinite(record[k])} - handled:
                error = NonFiniteLossError(first + i, {k: record[k] for k in LOSS_KEYS})
                break
            for k in HISTORY_KEYS:
                self.history[k].append(record[k])
            rows.append((first + i, record))
        if self._log is not None:
            self._log.append(rows)
        if error is not None:
            raise error
        return rows

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
            check_free_space(folder, self.checkpoint_bytes(steps))

    def _checkpoint_if_new(self, ckpt: str) -> None:
        if self._saved_at != (os.path.realpath(ckpt), self.step):
            self.save_checkpoint(ckpt)

    def train(self, steps: int | None = None, *, progress: bool = False) -> Dict[str, List[float]]:
        """Train until `steps` generator steps in total (default config.steps), checkpointing
        every config.checkpoint_every steps and at the end when config.out_dir is set.

        With an out_dir, before the first step: the folder is locked against other runs
        (lock_output_folder), checked for space, and given a checkpoint of the starting state;
        SIGINT or SIGTERM then stop the run after the current step with a checkpoint of it
        (TrainingInterrupted). The logged values are read from the device every log_every steps
        (flush_logs); with an out_dir they are appended to history.csv (and TensorBoard with
        config.tensorboard) as they are read, and sample_every K writes a grid of the fixed
        latents' samples every K steps (write_sample_grid)."""
        cfg = self.config
        total = cfg.steps if steps is None else int(steps)
        ckpt = self.checkpoint_path()
        every = cfg.checkpoint_every
        lock = (lock_output_folder(cfg.out_dir) if ckpt and self.is_main_process
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
                if ckpt and self.is_main_process:
                    self._log = logs_mod.RunLog(cfg.out_dir, self.history,
                                                tensorboard=cfg.tensorboard)
                    if cfg.sample_every and self.step < total:
                        self.write_sample_grid(real=True)
                with _stop_on_signals(bool(ckpt) and not self.dist.enabled) as stop:
                    while self.step < total:
                        start = time.perf_counter()
                        self._iterate()
                        rows = []
                        if self.step % cfg.log_every == 0 or self.step == total:
                            rows = self.flush_logs()
                        self.train_seconds += time.perf_counter() - start
                        self._measure_on_schedule()
                        if ckpt and every and self.step % every == 0 and self.step < total:
                            self.save_checkpoint(ckpt)
                        if ckpt and cfg.sample_every and self.step % cfg.sample_every == 0:
                            self.write_sample_grid()
                        if bar is not None:
                            bar.update(1)
                            if rows:
                                bar.set_postfix(W=f"{rows[-1][1]['wasserstein']:.4f}",
                                                GP=f"{rows[-1][1]['gp']:.4f}", refresh=False)
                        if stop["signum"] is not None:
                            self._checkpoint_if_new(ckpt)
                            raise TrainingInterrupted(self.step, stop["signum"], ckpt)
            finally:
                if bar is not None:
                    bar.close()
                if self._log is not None:
                    self._log.close()
                    self._log = None
            if ckpt:
                self._checkpoint_if_new(ckpt)
        return self.history

    def grid_noise(self) -> Tensor:
        """The fixed latents of the sample grids: the 64 of fixed_noise for images (the final
        samples.png's too); for points and tables 1000, a function of the seed, for a cloud or
        histograms worth reading."""
        if self.dataset.kind == "image":
            return self.fixed_noise
        g = torch.Generator().manual_seed(self.config.seed + 3)
        return torch.randn(1000, self.config.latent_dim, generator=g).to(self.device)

    def write_sample_grid(self, folder: str | None = None, *, real: bool = False) -> str | None:
        """The samples of the fixed latents (grid_noise) as a picture in the data's units,
        folder/samples/step_000500.png (the current step), or with `real` one of the real data,
        folder/samples/real.png (written once: kept if there); also into TensorBoard while
        train() logs to it. Returns the path (None where nothing was written)."""
        folder = folder or self.config.out_dir
        if not folder or not self.is_main_process:
            return None
        samples = None
        if not real:
            # a table's categories are drawn (Gumbel softmax): from a stream of their own, so
            # that a grid neither changes the training run nor differs between two calls
            cuda = [self.device.index or 0] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda):
                torch.manual_seed(self.config.seed + 3)
                samples = self.generate_samples(noise=self.grid_noise()).numpy()
        return logs_mod.write_sample_grid(folder, self.dataset, samples, self.step,
                                          self.config.dataset, self._log)

    @torch.no_grad()
    def generate_samples(self, n: int = 64, seed: int | None = None,
                         noise: Tensor | None = None, ema: bool = True,
                         labels: Any = None) -> Tensor:
        """n generated samples in model space, on the CPU, with the generator in eval mode: the
        averaged generator when ema_decay > 0 (unless ema=False), else the trained one. Every
        sample of the package (pictures, metrics, grids) is drawn here.

        With `seed` (or explicit `noise`) the noise comes from its own generator, so calling this
        during training does not change the training run's random stream.

        Conditional runs: `labels` gives each sample's class (an int or a class name for all of
        them, or n of them: ints, names, a tensor); None draws them at the data's class
        frequencies (from the seed's generator when `seed` is given). `self.class_names` lists
        the classes. An unconditional run refuses labels.
        """
        g = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        if noise is None:
            if g is None:
                noise = self._noise(n)
            else:
                noise = torch.randn(n, self.config.latent_dim, generator=g).to(self.device)
        ys = self._sample_labels(len(noise), labels, g)
        model = self.generator_ema if ema and self.generator_ema is not None else self.generator
        was_training = model.training
        model.eval()
        try:
            if ys is None:
                chunks = [model(z).float().cpu() for z in noise.split(4096)]
            else:
                chunks = [model(z, y).float().cpu()
                          for z, y in zip(noise.split(4096), ys.split(4096))]
        finally:
            model.train(was_training)
        return torch.cat(chunks)

    # -- outputs -----------------------------------------------------------------------------

    def evaluate(self, samples: np.ndarray | None = None, ema: bool = True,
                 labels: np.ndarray | None = None) -> Dict[str, Any]:
        """The dataset's quality metrics (wgangp_fast.train.metrics) on n_eval_samples samples
        (of the averaged generator when there is one, unless ema=False); `labels`: the classes
        a conditional run's samples were drawn for."""
        if samples is None:
            n, seed = self.config.n_eval_samples, self.config.seed + 2
            labels = self._sample_labels(n, None, torch.Generator().manual_seed(seed))
            samples = self.generate_samples(n, seed=seed, ema=ema, labels=labels).numpy()
        if labels is not None:
            labels = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels)
        return metrics_mod.evaluate(self.dataset, samples, seed=self.config.seed, labels=labels)

    def write_outputs(self, out_dir: str | None = None) -> Dict[str, Any]:
        """samples.npy, samples.png, curves.png, metrics.json, history.csv, config.json (and
        samples.csv for tables) in out_dir (wgangp_fast.train.outputs); conditional runs add
        samples_labels.npy and, for images, a grid per class in classes/. Image runs measure
        FID / KID / IS (fid_samples). Returns the metrics."""
        folder = out_dir or self.config.out_dir
        if not folder:
            raise ValueError("write_outputs needs an out_dir")
        if not self.is_main_process:
            return {}
        os.makedirs(folder, exist_ok=True)
        cfg = self.config
        n = max(2500, cfg.n_eval_samples)
        labels = self._sample_labels(n, None, torch.Generator().manual_seed(cfg.seed + 2))
        samples = self.generate_samples(n, seed=cfg.seed + 2, labels=labels).numpy()
        metrics = self.evaluate(samples[: cfg.n_eval_samples],
                                labels=None if labels is None else labels[: cfg.n_eval_samples])
        metrics.update({
            "dataset": cfg.dataset, "model": self.model_kind, "method": cfg.method,
            "steps": self.step, "critic_iters": self.critic_iters,
            "train_seconds": round(self.train_seconds, 3),
            "steps_per_second": round(self.step / self.train_seconds, 3)
            if self.train_seconds > 0 else None,
            "device": str(self.device), "world_size": self.world_size,
            "precision": cfg.precision, "step_mode": self.step_mode,
            "gp_every": cfg.gp_every, "ema_decay": cfg.ema_decay,
        })
        if self.generator_ema is not None:
            # the same metrics for the trained (not averaged) weights, to show what EMA adds
            raw = self.evaluate(ema=False)
            metrics["raw_generator"] = {k: v for k, v in raw.items()
                                        if not isinstance(v, (list, dict))}
        if self.scaler is not None:
            metrics["amp_skipped_steps"] = self.amp_skipped_steps
        metrics.update(outputs_mod.summarise_history(self.history))
        metrics.update(self.image_quality())
        if self.fid_history:
            metrics["fid_history"] = self.fid_history
        if self.class_names is None:
            grid = self.generate_samples(noise=self.fixed_noise).numpy()
            grid_rows = None
        else:
            grid, grid_rows = self.class_grid()
            metrics["classes"] = self.class_names
        outputs_mod.write_outputs(folder, dataset=self.dataset, config=self.config_dict(),
                                  history=self.history, samples=samples, grid=grid,
                                  metrics=metrics, step=self.step, grid_rows=grid_rows)
        if self.class_names is not None:
            from . import class_outputs

            class_outputs.write_class_outputs(self, folder, samples, labels.cpu().numpy())
        return metrics
