"""The checkpoint half of `WGANGPTrainer` (a mixin): the whole training state as a dict, its
restoration (checked first, so a refused checkpoint changes nothing), the atomic save that refuses
a non-finite state, and a trainer rebuilt from a checkpoint with the settings a resume may change
(wgangp_fast.train.checkpoint holds the file format and its checks)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Type, TypeVar

import torch

from . import checkpoint as ckpt_mod
from . import data as data_mod
from . import distributed, schedule
from .checkpoint import CHECKPOINT_FORMAT
from .config import HISTORY_KEYS, RESUMABLE, WGANGPConfig

__all__ = ["CheckpointedRun", "NonFiniteLossError"]

# the class from_checkpoint builds (WGANGPTrainer, or a subclass of it)
_Run = TypeVar("_Run", bound="CheckpointedRun")


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; the run stops and the last good checkpoint is kept."""

    def __init__(self, step: int, values: Dict[str, float]) -> None:
        self.step = step
        self.values = values
        shown = ", ".join(f"{k}={v}" for k, v in values.items())
        super().__init__(f"non-finite loss at step {step} ({shown}); training stopped. The last "
                         f"good checkpoint (if any) was kept: lower the learning rate or check "
                         f"the data")


class CheckpointedRun:
    """state_dict / load_state_dict / save_checkpoint / from_checkpoint of a WGANGPTrainer."""

    def _state_is_finite(self) -> bool:
        return ckpt_mod.state_is_finite((self.generator, self.critic, self.generator_ema),
                                        (self.optimizer_g, self.optimizer_c))

    def _check_data_matches(self, state: Dict[str, Any]) -> None:
        cfg = self.config
        source = f"the data ({cfg.data_path})" if cfg.data_path else f"dataset {cfg.dataset!r}"
        saved = state.get("class_names")
        if self.class_names is not None and saved is not None and saved != self.class_names:
            raise ckpt_mod.CheckpointError(
                f"{source} no longer matches the checkpoint: its classes were {saved} and are "
                f"now {self.class_names}; resume with the data the run started with, or start "
                f"a new run on this data without --resume")
        ckpt_mod.check_data_matches(state, self.dataset, source,
                                    {"generator": self.generator, "critic": self.critic})

    def state_dict(self) -> Dict[str, Any]:
        """The whole training state. In a distributed run every rank must call it (it gathers
        each rank's RNG and sampler state under "ranks")."""
        own = {"rng": ckpt_mod.rng_state(), "sampler": self.sampler.state_dict()}
        ranks = distributed.gather_objects(own) if self.dist.enabled else []
        portable = ckpt_mod.portable_optimizer_state
        state = {
            "format": CHECKPOINT_FORMAT,
            "config": self.config_dict(),
            "step": self.step,
            "critic_iters": self.critic_iters,
            "train_seconds": self.train_seconds,
            "generator": self.generator.state_dict(),
            "critic": self.critic.state_dict(),
            "optimizer_g": portable(self.optimizer_g.state_dict()),
            "optimizer_c": portable(self.optimizer_c.state_dict()),
            "sampler": self.sampler.state_dict(),
            "rng": ckpt_mod.rng_state(),
            "fixed_noise": self.fixed_noise.cpu(),
            "history": {k: torch.tensor(v, dtype=torch.float64) for k, v in self.history.items()},
            "world_size": self.world_size,
            "ranks": ranks,
            "last_gp": float(self._last_gp),
            "last_norm": float(self._last_norm),
            "amp_skipped_steps": self.amp_skipped_steps,
            "data": data_mod.signature(self.dataset),
            "lr_schedule": {"start": self._lr_segment[0], "factor": self._lr_segment[1]},
            "class_names": self.class_names,
            "fid_history": [dict(r) for r in self.fid_history],
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
        ckpt_mod.check_checkpoint(state, path)
        self._check_data_matches(state)
        if self.generator_ema is not None and "generator_ema" not in state:
            raise ValueError("the checkpoint has no averaged generator (generator_ema) but "
                             "the config has ema_decay > 0")
        for name in ("optimizer_g", "optimizer_c"):
            ckpt_mod.check_optimizer_state(state[name], getattr(self, name), path, name)
        self.generator.load_state_dict(state["generator"])
        self.critic.load_state_dict(state["critic"])
        if self.generator_ema is not None:
            self.generator_ema.load_state_dict(state["generator_ema"])
        self.optimizer_g.load_state_dict(state["optimizer_g"])
        self.optimizer_c.load_state_dict(state["optimizer_c"])
        self.sampler.load_state_dict(state["sampler"])
        self.fixed_noise = state["fixed_noise"].to(self.device)
        self.step = int(state["step"])
        self.critic_iters = int(state["critic_iters"])
        self.train_seconds = float(state.get("train_seconds", 0.0))
        # a value a checkpoint of an earlier version did not log reads as not measured
        self.history = {k: state["history"][k].tolist() if k in state["history"]
                        else [float("nan")] * self.step for k in HISTORY_KEYS}
        self._pending = []
        plan = state.get("lr_schedule") or {}
        self._lr_segment = (int(plan.get("start", 0)), float(plan.get("factor", 1.0)))
        self._last_gp = torch.tensor(float(state.get("last_gp", 0.0)), device=self.device)
        self._last_norm = torch.tensor(float(state.get("last_norm", float("nan"))),
                                       device=self.device)
        self.amp_skipped_steps = int(state.get("amp_skipped_steps", 0))
        self.fid_history = [dict(r) for r in state.get("fid_history") or []]
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
            self.scaler_g.load_state_dict(state["scaler_g"])
        ranks = state.get("ranks") or []
        if not self.dist.enabled:
            ckpt_mod.set_rng_state(state["rng"])
        elif len(ranks) == self.world_size:
            self.sampler.load_state_dict(ranks[self.rank]["sampler"])
            ckpt_mod.set_rng_state(ranks[self.rank]["rng"])
        else:
            # saved with another number of ranks: fresh streams, a function of (seed, rank, step)
            seed = self.config.seed
            ckpt_mod.seed_all(distributed.derive_seed(seed, self.rank, self.step))
            self.sampler.generator.manual_seed(
                distributed.derive_seed(seed * 1009 + 17, self.rank, self.step))

    def save_checkpoint(self, path: str) -> None:
        """Write the whole training state atomically; refuses a state with NaN/inf weights or
        optimiser state, so a good checkpoint is never replaced by a broken one. Collective in a
        distributed run: every rank calls it, rank 0 writes."""
        # the steps not yet read from the device first: a non-finite loss among them stops the
        # run here, and the history saved is complete
        self.flush_logs()
        # the weights are identical on every rank, so every rank decides the same here
        if not self._state_is_finite():
            raise NonFiniteLossError(self.step, {"weights": float("nan")})
        state = self.state_dict()
        if self.is_main_process:
            ckpt_mod.atomic_save(state, path)
        distributed.barrier()
        self._saved_at = (os.path.realpath(path), self.step)

    @staticmethod
    def read_checkpoint(path: str, map_location: Any = "cpu", *,
                        check: bool = True) -> Dict[str, Any]:
        """The checkpoint at `path` (wgangp_fast.train.checkpoint.read_checkpoint)."""
        return ckpt_mod.read_checkpoint(path, map_location, check=check)

    @classmethod
    def from_checkpoint(cls: Type[_Run], path: str, dataset: data_mod.Dataset | None = None, *,
                        step_options: Dict[str, Any] | None = None,
                        **overrides: Any) -> _Run:
        """A trainer in exactly the state saved at `path`. `overrides` may change settings that
        do not alter the models or the data (config.RESUMABLE: steps, out_dir, checkpoint_every,
        device, backend, n_eval_samples, step_mode, the logs' settings, and lr_decay_steps, which
        stretches the rest of a linear decay from the current learning rate: see
        wgangp_fast.train.schedule); a total past the decay's horizon is refused (validate);
        `step_options` as for the constructor."""
        state = cls.read_checkpoint(path)
        bad = sorted(k for k, v in overrides.items() if v is not None and k not in RESUMABLE)
        if bad:
            raise ValueError(f"cannot change {', '.join(bad)} when resuming (only "
                             f"{', '.join(sorted(RESUMABLE))})")
        try:
            saved = WGANGPConfig.from_dict(state["config"])
        except (TypeError, ValueError) as exc:
            raise ckpt_mod.CheckpointError(f"{path}: the checkpoint's config is not one this "
                                           f"version can read ({exc})") from None
        if saved.dataset == "csv" and "table_transform" not in state["config"]:
            # written before tables had transforms: its columns were standardised
            saved = dataclasses.replace(saved, table_transform="standard")
        if saved.lr_decay == "linear" and saved.lr_decay_steps is None:
            # written before the horizon was recorded: it was the run's steps
            saved = dataclasses.replace(saved, lr_decay_steps=saved.steps)
        cfg = dataclasses.replace(saved, **{k: v for k, v in overrides.items() if v is not None})
        segment = None
        if saved.lr_decay == "linear" and cfg.lr_decay_steps != saved.lr_decay_steps:
            # the horizon moves: the rest of the decay is stretched to it, from the current rate
            saved_segment = state.get("lr_schedule") or {}
            segment = schedule.replan(
                int(state["step"]), saved.lr_decay_steps,
                (int(saved_segment.get("start", 0)), float(saved_segment.get("factor", 1.0))),
                cfg.lr_decay_steps)
        if dataset is None and cfg.dataset == "csv" and "table" in (state.get("data") or {}):
            # encoded as the run started: its codec, not a new fit of the file
            try:
                dataset = data_mod.load_dataset(
                    "csv", cfg.data_path, categorical=cfg.categorical,
                    label_column=cfg.label_column, table_codec=state["data"]["table"])
            except data_mod.TableMismatchError as exc:
                raise ckpt_mod.CheckpointError(
                    f"the data ({cfg.data_path}) no longer matches the checkpoint: {exc}; resume "
                    f"with the data the run started with, or start a new run on this data "
                    f"without --resume") from None
        trainer = cls(cfg, dataset=dataset, step_options=step_options)
        trainer.load_state_dict(state, path)
        if segment is not None:
            trainer._lr_segment = segment
        trainer._saved_at = (os.path.realpath(path), trainer.step)
        return trainer

    def config_dict(self) -> Dict[str, Any]:
        """The run's settings as config.json and the checkpoint hold them: the config, with the
        decay's horizon filled in (lr_decay_steps: steps unless set), so that a resumed run with
        a new total keeps the schedule it started with."""
        d = self.config.to_dict()
        if self.config.lr_decay == "linear":
            d["lr_decay_steps"] = self.config.decay_horizon()
        return d
