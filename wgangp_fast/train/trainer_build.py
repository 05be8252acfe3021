"""The construction half of `WGANGPTrainer` (a mixin): which models a config's data gets, the
models themselves, the checks made before the first step (BatchNorm batch size, the penalty
backend on this device), the optimisers (with StyleGAN2's lazy-regularisation correction), the
averaged generator and the wgangp_fast.steps.TrainStep every iteration runs through."""

from __future__ import annotations

import copy
from typing import Any, Dict, Tuple

import torch
from torch import nn

from .. import backends
from .. import steps as steps_mod
from .config import PENALTY_KINDS
from .models import (
    ConvCritic,
    ConvGenerator,
    MLPCritic,
    MLPGenerator,
    PacCritic,
    TabularGenerator,
    init_he,
)
from .models_resnet import ResNetCritic, ResNetGenerator

__all__ = ["RunConstruction"]


class RunConstruction:
    """Builds a run's models, optimisers and train step from `self.config` and `self.dataset`
    (set by WGANGPTrainer.__init__, which calls these in order)."""

    def _model_kind(self) -> str:
        cfg, kind, ds = self.config, self.config.model, self.dataset
        if kind == "auto":
            if ds.kind == "tabular" or cfg.pac > 1:
                kind = "pac"
            elif ds.kind == "image":
                c, h, w = ds.shape
                if h != w or h < 8 or h & (h - 1):
                    raise ValueError(f"model 'auto' gives images conv (below 32x32) or resnet "
                                     f"models (from 32x32 up), which need square images with a "
                                     f"power-of-two side >= 8, got {h}x{w}: pass --image-size "
                                     f"(e.g. 32), or choose --model mlp")
                kind = "conv" if h < 32 else "resnet"
            else:
                kind = "mlp"
        if kind in ("conv", "resnet"):
            if ds.kind != "image":
                raise ValueError(f"model {kind!r} needs image data, dataset {cfg.dataset!r} is "
                                 f"{ds.kind}")
            c, h, w = ds.shape
            if h != w or h < 8 or h & (h - 1):
                raise ValueError(f"model {kind!r} needs square images with a power-of-two side "
                                 f">= 8, got {h}x{w}: pass image_size (--image-size 32) to resize")
        if cfg.critic_norm != "none" and kind != "resnet":
            raise ValueError(f"critic_norm (--critic-norm) {cfg.critic_norm!r} is the resnet "
                             f"critic's; model {kind!r} has its own")
        if cfg.method == "sn" and kind == "resnet":
            raise ValueError("method 'sn' (spectral norm) works with models 'mlp' and 'conv', "
                             "not 'resnet'")
        return kind

    def _build_models(self) -> Tuple[nn.Module, nn.Module]:
        gen, critic = self._new_models()
        # the resnet pair keeps its own init (He's for the convolutions, the paper's)
        if self.config.weight_init == "he" and self.model_kind != "resnet":
            init_he(gen)
            init_he(critic)
        if self.class_names is not None:
            gen, critic = self._conditional_models(gen, critic)
        return gen, critic

    def _new_models(self) -> Tuple[nn.Module, nn.Module]:
        cfg, ds = self.config, self.dataset
        sn = cfg.method == "sn"
        # a conditional generator takes [z, embedding(label)], the embedding z's size
        latent = cfg.latent_dim * (2 if cfg.conditional else 1)
        if self.model_kind == "resnet":
            c, size, _ = ds.shape
            return (ResNetGenerator(latent, c, size, cfg.resnet_width),
                    ResNetCritic(c, size, cfg.resnet_width, cfg.critic_norm))
        if self.model_kind == "conv":
            c, size, _ = ds.shape
            return (ConvGenerator(latent, c, size, cfg.feature_maps),
                    ConvCritic(c, size, cfg.feature_maps, spectral_norm=sn))
        if ds.kind == "tabular":
            gen: nn.Module = TabularGenerator(latent, ds.dim,
                                              hidden=(cfg.hidden_dim, cfg.hidden_dim),
                                              categorical_spans=ds.categorical_spans,
                                              tanh_columns=getattr(ds, "tanh_columns", ()),
                                              tanh_scale=getattr(ds, "tanh_scale", 1.0))
        else:
            act = "tanh" if ds.kind == "image" else None
            gen = MLPGenerator(latent, cfg.hidden_dim, ds.shape, act,
                               batch_norm=cfg.generator_batchnorm)
        if self.model_kind == "pac":
            width = ds.dim + (len(self.class_names) if cfg.conditional else 0)
            critic: nn.Module = PacCritic(width, cfg.pac, hidden=(cfg.hidden_dim, cfg.hidden_dim))
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

    def _build_train_step(self, scalers, step_options: Dict[str, Any] | None
                          ) -> steps_mod.TrainStep:
        """Every iteration of every configuration runs through one wgangp_fast.steps.TrainStep:
        the method's penalty (or none, for clip and sn), weight clipping as the critic step's
        post_step hook, the plain-autograd penalty as its penalty_impl, lazy regularisation,
        autocast and the fp16 GradScalers, DDP models. The mode is
        checked here (wgangp_fast.steps.policy), so a mode that cannot run this configuration is
        refused before training. `step_options` go to both step classes (compile_options,
        simulate_graphs, warmup, max_graphs)."""
        cfg = self.config
        options = dict(step_options or {})
        autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
        critic_step = steps_mod.CriticStep(
            self.critic_ddp, self.optimizer_c, lambda_gp=cfg.lambda_gp, pac=cfg.pac,
            kind=PENALTY_KINDS.get(cfg.method), mode=cfg.step_mode, scaler=scalers[0],
            autocast=autocast, gp_every=cfg.gp_every, backend=cfg.backend,
            penalty_impl=cfg.penalty_impl, return_norms=cfg.method in PENALTY_KINDS,
            post_step=steps_mod.clip_weights(cfg.clip_value) if cfg.method == "clip" else None,
            **options)
        generator_step = steps_mod.GeneratorStep(self.generator_ddp, self.critic,
                                                 self.optimizer_g, mode=cfg.step_mode,
                                                 scaler=scalers[1], autocast=autocast,
                                                 conditional=cfg.conditional, **options)
        train = steps_mod.TrainStep(critic_step, generator_step, latent_dim=cfg.latent_dim,
                                    n_critic=cfg.n_critic)
        try:
            train.check(self.device)
        except ValueError as exc:
            raise ValueError(f"step_mode {cfg.step_mode!r} (--step-mode) cannot run this "
                             f"configuration: {exc}") from None
        return train

    @property
    def critic_step(self) -> steps_mod.CriticStep:
        """The critic step every iteration runs (its settings: the method's penalty, hooks)."""
        return self.train_iteration.critic_step

    @property
    def scaler(self):
        """The critic step's fp16 GradScaler (None in fp32 and bf16)."""
        return self.train_iteration.critic_step.scaler

    @scaler.setter
    def scaler(self, value) -> None:
        self.train_iteration.critic_step.scaler = value

    @property
    def scaler_g(self):
        """The generator step's fp16 GradScaler (None in fp32 and bf16)."""
        return self.train_iteration.generator_step.scaler

    @scaler_g.setter
    def scaler_g(self, value) -> None:
        self.train_iteration.generator_step.scaler = value

    @property
    def step_mode(self) -> str:
        """The mode the iterations run in (one of wgangp_fast.steps.MODES but "auto")."""
        return self.train_iteration.mode or self.train_iteration.requested_mode

    def _build_ema(self) -> nn.Module | None:
        """The averaged generator of ema_decay > 0: a frozen copy, always in eval mode."""
        if self.config.ema_decay <= 0:
            return None
        ema = copy.deepcopy(self.generator).eval()
        for p in ema.parameters():
            p.requires_grad_(False)
        return ema

    def lazy_adam_factor(self) -> float:
        """StyleGAN2's lazy-regularisation correction c = k / (k + 1) of the critic's Adam (lr
        times c, betas to the power c); 1 without lazy_adam_correction or when k = 1."""
        cfg = self.config
        if not cfg.lazy_adam_correction or cfg.gp_every == 1 or cfg.method == "clip":
            return 1.0
        return cfg.gp_every / (cfg.gp_every + 1)

    def _build_optimizers(self):
        cfg = self.config
        if cfg.method == "clip":
            return (torch.optim.RMSprop(self.generator.parameters(), lr=cfg.clip_lr),
                    torch.optim.RMSprop(self.critic.parameters(), lr=cfg.clip_lr))
        betas = (float(cfg.beta1), float(cfg.beta2))
        c = self.lazy_adam_factor()
        betas_c = (float(cfg.beta1) ** c, float(cfg.beta2) ** c)
        return (torch.optim.Adam(self.generator.parameters(), lr=cfg.lr, betas=betas),
                torch.optim.Adam(self.critic.parameters(), lr=cfg.lr * c, betas=betas_c))
