"""The settings of a training run: `WGANGPConfig`, the per-dataset presets, the checks of a
configuration and what a resumed run may change.

Each field's metadata holds its check ("int>=1", a tuple of choices, ...) and its command-line
`Flag` (help, flag names, group): validate() and the parser of `wgangp-fast train` are both built
from them, so a new setting is declared once, here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, Tuple

import numpy as np

from .. import backends
from .. import penalty as penalty_mod
from .. import steps as steps_mod
from . import data as data_mod

__all__ = ["DATASET_PRESETS", "RESUMABLE", "Flag", "WGANGPConfig"]

METHODS = ("gp", "lp", "clip", "sn", "r1", "r2", "dragan")
# method -> wgangp_fast.gradient_penalty(kind=...)
PENALTY_KINDS = {"gp": "wgan-gp", "lp": "wgan-lp", "r1": "r1", "r2": "r2", "dragan": "dragan"}
PRECISIONS = ("fp32", "bf16", "fp16")
# how a training iteration runs (wgangp_fast.steps.TrainStep's modes)
STEP_MODES = steps_mod.MODES
# auto: pac for tables (or pac > 1), mlp for points, conv for images below 32x32 and resnet
# from 32x32 up (where Gulrajani et al. used it); images are never given an MLP by auto
MODELS = ("auto", "mlp", "conv", "resnet", "pac")
CRITIC_NORMS = ("none", "layer")
# "autograd": the same penalty in plain autograd, for comparison (CriticStep's penalty_impl)
PENALTY_IMPLS = penalty_mod.PENALTY_IMPLS
LR_DECAYS = ("none", "linear")
WEIGHT_INITS = ("normal", "he")
# what each generator step records: the history, history.csv and the checkpoint hold these.
# grad_norm: the mean per-group gradient norm of the iteration's last penalised critic step (nan
# for methods without a penalty); lr_g / lr_c: the learning rates that step ran with.
HISTORY_KEYS = ("loss_c", "loss_g", "gp", "wasserstein", "grad_norm", "lr_g", "lr_c")
# the values a run stops on when one is not finite
LOSS_KEYS = ("loss_c", "loss_g", "gp", "wasserstein")
# how a table's numeric columns are encoded (wgangp_fast.train.data.tables)
TABLE_TRANSFORMS = ("mode", "standard")
# the settings a resumed run may change: none of them alters the models or the data, and
# lr_decay_steps re-plans only the rest of the schedule, from the current learning rate
RESUMABLE = frozenset({"steps", "out_dir", "checkpoint_every", "device", "backend",
                       "n_eval_samples", "step_mode", "image_cache", "decode_workers",
                       "max_image_pixels", "fid_every", "fid_samples", "inception_weights",
                       "log_every", "sample_every", "tensorboard", "lr_decay_steps"})

# Per-dataset settings that differ from the defaults, each kept because it measured better over
# seeds; what each buys and how it was found: docs/presets.md.
_TOY = {"batch_size": 256, "hidden_dim": 64, "lr": 5e-4, "beta1": 0.5, "lambda_gp": 0.1,
        "lr_decay": "linear"}
DATASET_PRESETS: Dict[str, Dict[str, Any]] = {
    "ring8": dict(_TOY, steps=1800, lr=1e-2, batch_size=512, lr_warmup=100, latent_dim=2,
                  generator_batchnorm=False, weight_init="he", ema_decay=0.999),
    "grid25": dict(_TOY, steps=5000, lr=4e-3, latent_dim=2, generator_batchnorm=False,
                   weight_init="he"),
    "swissroll": dict(_TOY, steps=3000),
    # the MLP pair of the measured preset (--model auto gives images conv or resnet models)
    "digits": {"steps": 3000, "batch_size": 64, "hidden_dim": 128, "model": "mlp"},
    "csv": {"steps": 2000, "batch_size": 500, "pac": 10, "model": "pac"},
}


# The groups of `wgangp-fast train --help`, in order.
DATA, MODEL, OPTIMISATION, RUN = "data", "model and method", "optimisation", "run"
FLAG_GROUPS = (DATA, MODEL, OPTIMISATION, RUN)
# The value checks a setting may carry: validate() applies them, and the command line parses its
# flag with the same range (a tuple of names is a choice).
CHECKS = ("int>=0", "int>=1", "number>0", "number>=0")


@dataclass(frozen=True)
class Flag:
    """A setting's flag on `wgangp-fast train`: wgangp_fast.cli builds its parser from the Flag in
    each WGANGPConfig field's metadata, with the field's check as the flag's type or choices."""

    group: str
    help: str | None = None
    names: Tuple[str, ...] = ()  # default: --the-field-name
    metavar: str | None = None
    nargs: str | None = None
    switch: str | None = None  # "on": a store_true flag; "on/off": --x and --no-x
    check: str | None = None  # the flag's range where the setting has no check of its own


def setting(default: Any, check: Any = None, flag: Flag | None = None):
    """A WGANGPConfig field with its check (one of CHECKS, or a tuple of choices) and flag."""
    assert check is None or isinstance(check, tuple) or check in CHECKS, check
    metadata = {k: v for k, v in (("check", check), ("flag", flag)) if v is not None}
    return dataclasses.field(default=default, metadata=metadata)


@dataclass
class WGANGPConfig:
    """Every setting of a run. Defaults are the WGAN-GP paper's Algorithm 1 (lambda 10, n_critic 5,
    Adam 1e-4 with betas (0, 0.9)) with latent 100, width 256, batch 64; `for_dataset` applies
    DATASET_PRESETS."""

    dataset: str = setting("ring8", data_mod.DATASETS, Flag(
        DATA, "default: ring8 (or what --csv, --images, --mnist, --fashion-mnist, --cifar10 "
              "or --data's extension imply)"))
    data_path: str | None = setting(None, flag=Flag(
        DATA, "the file or folder of --dataset csv, images, mnist, fashion-mnist or cifar10",
        ("--data",), "PATH"))
    npz_key: str | None = setting(None, flag=Flag(DATA, "which array of a .npz file holds the "
                                                        "images"))
    categorical: Tuple[str, ...] = setting((), flag=Flag(
        DATA, "CSV columns to treat as categorical even if numeric", metavar="COLUMN",
        nargs="+"))
    image_size: int | None = setting(None, flag=Flag(
        DATA, "resize images to this side (e.g. 32 for --model conv); a folder's images: shorter "
              "side resized, then centre-cropped", check="int>=1"))
    label_column: str | None = setting(None, flag=Flag(
        DATA, "the class column of a --csv table: its values are the labels of a --conditional "
              "run", metavar="NAME"))
    image_cache: str | None = setting(None, flag=Flag(
        DATA, "folder for the decoded uint8 cache of an --images folder (default "
              "$WGANGP_FAST_CACHE/images or ~/.cache/wgangp_fast/images)", metavar="DIR"))
    max_image_pixels: int = setting(data_mod.DEFAULT_MAX_IMAGE_PIXELS, "int>=1", Flag(
        DATA, "refuse an image file whose header claims more pixels than this, before decoding "
              "it (default 100000000)", metavar="N"))
    decode_workers: int = setting(0, "int>=0", Flag(
        DATA, "threads decoding an --images folder into its cache (default 0: one per core)",
        metavar="N"))
    table_transform: str = setting("mode", TABLE_TRANSFORMS, Flag(
        DATA, "how a CSV's numeric columns are encoded: mode (default: CTGAN's mode-specific "
              "normalisation, positive columns in log space, samples kept in each column's "
              "observed range) or standard (mean 0, std 1)"))
    model: str = setting("auto", MODELS, Flag(
        MODEL, "auto (default): conv for images below 32x32, resnet from 32x32 up, pac for "
               "tables, mlp for points; mlp, conv (DCGAN), resnet (the WGAN-GP paper's), pac "
               "(CTGAN's packed critic)"))
    conditional: bool = setting(False, flag=Flag(
        MODEL, "class-conditional models on a labelled dataset (class subfolders, digits, "
               "mnist, cifar10, --label-column): G(z, label), a projection critic", switch="on"))
    resnet_width: int = setting(128, "int>=1", Flag(
        MODEL, "channels of the resnet models' blocks (default 128, the paper's)", metavar="C"))
    critic_norm: str = setting("none", CRITIC_NORMS, Flag(
        MODEL, "the resnet critic's normalisation: none (default) or layer (per-sample "
               "LayerNorm); never BatchNorm"))
    method: str = setting("gp", METHODS, Flag(
        MODEL, "gp (default), lp (one-sided), clip (original WGAN), sn (spectral norm), r1 / r2 "
               "(zero-centred on real / fake samples, gamma = --lambda), dragan (norm 1 around "
               "perturbed real samples)"))
    steps: int = setting(1000, "int>=0", Flag(OPTIMISATION, "generator steps in total"))
    latent_dim: int = setting(100, "int>=1", Flag(MODEL))
    hidden_dim: int = setting(256, "int>=1", Flag(MODEL))
    feature_maps: int = setting(64, "int>=1", Flag(MODEL))
    generator_batchnorm: bool = setting(True, flag=Flag(
        MODEL, "BatchNorm in the MLP generator (default on)", switch="on/off"))
    weight_init: str = setting("normal", WEIGHT_INITS, Flag(
        MODEL, "normal: N(0, 0.02) weights, zero biases (DCGAN; default); he: N(0, gain^2 / "
               "fan_in), which keeps the signal's scale through layers without normalisation",
        ("--init",)))
    lr: float = setting(1e-4, "number>0", Flag(OPTIMISATION))
    lr_decay: str = setting("none", LR_DECAYS, Flag(OPTIMISATION, "none, or linear to 0 at the "
                                                                   "last step"))
    lr_decay_steps: int | None = setting(None, flag=Flag(
        OPTIMISATION, "the step where --lr-decay linear reaches 0 (default: --steps); recorded "
                      "in the checkpoint. With --resume: stretch the rest of the decay to step "
                      "N, from the current learning rate", metavar="N", check="int>=1"))
    lr_warmup: int = setting(0, "int>=0", Flag(
        OPTIMISATION, "learning rates ramped linearly from lr/K to lr over the first K generator "
                      "steps (default 0: none)", metavar="K"))
    ema_decay: float = setting(0.0, "number>=0", Flag(
        OPTIMISATION, "sample and evaluate with an exponential moving average of the generator's "
                      "weights, decay D in [0, 1) (default 0: off); e.g. 0.99 with --lr-decay "
                      "none", metavar="D"))
    beta1: float = setting(0.0, "number>=0", Flag(
        OPTIMISATION, "Adam's first-moment decay for both networks, in [0, 1) (default 0; 0.5 "
                      "for the 2-D mixtures)"))
    beta2: float = setting(0.9, "number>=0", Flag(
        OPTIMISATION, "Adam's second-moment decay for both networks, in [0, 1) (default 0.9)"))
    lambda_gp: float = setting(10.0, "number>=0", Flag(
        OPTIMISATION, "penalty weight (default 10; gamma for r1 / r2)",
        ("--lambda", "--lambda-gp")))
    n_critic: int = setting(5, "int>=1", Flag(OPTIMISATION, "critic steps per generator step"))
    batch_size: int = setting(64, "int>=1", Flag(OPTIMISATION, "batch size", ("--batch",), "N"))
    pac: int = setting(1, "int>=1", Flag(MODEL, "samples per critic input (PacGAN)"))
    clip_value: float = setting(0.01, "number>0")
    clip_lr: float = setting(5e-5, "number>0")
    seed: int = setting(42, "int>=0", Flag(OPTIMISATION))
    device: str = setting("auto", flag=Flag(RUN, "cpu, cuda, cuda:1 or auto (default)"))
    backend: str = setting("auto", ("auto",) + backends.BACKENDS, Flag(
        RUN, "penalty backend: auto (default), cuda, triton, cpu, reference"))
    penalty_impl: str = setting("fused", PENALTY_IMPLS, Flag(
        RUN, "fused (default) or autograd: the same penalty in plain autograd, for comparison"))
    precision: str = setting("fp32", PRECISIONS, Flag(
        RUN, "fp32 (default), bf16 (autocast) or fp16 (autocast and GradScaler)"))
    step_mode: str = setting("eager", STEP_MODES, Flag(
        RUN, "how each iteration runs (wgangp_fast.TrainStep): eager (default: the usual hand-written "
             "loop with the fused penalty), compile (torch.compile of the torch.func step), graph "
             "/ compile+graph (CUDA graphs, one replay per iteration), auto (graph on CUDA, eager "
             "where graphs cannot run, with a warning saying why)"))
    gp_every: int = setting(1, "int>=1", Flag(
        OPTIMISATION, "lazy regularisation: the penalty on every K-th critic step only, weighted "
                      "by K (default 1)", metavar="K"))
    lazy_adam_correction: bool = setting(False, flag=Flag(
        OPTIMISATION, "with --gp-every K: critic Adam lr times c = K/(K+1), betas to the power c "
                      "(StyleGAN2)", switch="on"))
    out_dir: str | None = None  # the command line's --out, whose default depends on the dataset
    checkpoint_every: int = setting(0, "int>=0", Flag(
        RUN, "save a checkpoint every K steps (default 500; 0: only at the end)", metavar="K"))
    n_eval_samples: int = setting(2500, "int>=1", Flag(
        RUN, "samples for the metrics (default 2500)", ("--eval-samples",), "N"))
    fid_samples: int = setting(5000, "int>=0", Flag(
        RUN, "generated (and real) images for FID / KID / IS at the end of an image run "
             "(default 5000; 0: none); needs pip install 'wgangp_fast[metrics]'", metavar="N"))
    fid_every: int = setting(0, "int>=0", Flag(
        RUN, "also measure FID / KID every K generator steps (default 0: only at the end)",
        metavar="K"))
    inception_weights: str | None = setting(None, flag=Flag(
        RUN, "the Inception weights file for FID / KID (weights-inception-2015-12-05-"
             "6726825d.pth); default: the torch hub cache, else the metrics library's download",
        metavar="PATH"))
    log_every: int = setting(10, "int>=1", Flag(
        RUN, "read the logged values from the device, append them to history.csv (and "
             "TensorBoard) every K steps (default 10); a non-finite loss stops the run at the "
             "next such read, before any checkpoint", metavar="K"))
    sample_every: int = setting(0, "int>=0", Flag(
        RUN, "write a sample grid from fixed latents every K steps to OUT/samples/ (and a grid "
             "of real data once); default 0: only at the end", metavar="K"))
    tensorboard: bool = setting(False, flag=Flag(
        RUN, "write TensorBoard event files to OUT/tensorboard (losses, W, penalty, gradient "
             "norm, learning rates, sample grids); needs pip install 'wgangp_fast[tensorboard]'",
        switch="on"))

    @classmethod
    def for_dataset(cls, dataset: str = "ring8", **overrides: Any) -> WGANGPConfig:
        """The defaults, then the dataset's preset, then `overrides` (None values ignored)."""
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
        """The config of to_dict's dict (config.json, a checkpoint's "config"). A key this version
        does not know is a ValueError naming it: it comes from another version, and a run
        continued without that setting would not be the run the checkpoint saved."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in d if k not in names)
        if unknown:
            shown = ", ".join(f"{k!r} = {d[k]!r}" for k in unknown)
            raise ValueError(
                f"unknown setting{'s' if len(unknown) > 1 else ''} {shown}: written by another "
                f"version of wgangp_fast, whose run this one cannot continue as saved; resume "
                f"with that version, or start a new run")
        kept = dict(d)
        if "categorical" in kept:
            kept["categorical"] = tuple(kept["categorical"] or ())
        return cls(**kept)

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["categorical"] = list(self.categorical)
        return d

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

        for f in dataclasses.fields(self):
            check = f.metadata.get("check")
            if isinstance(check, tuple):
                choice(f.name, check)
            elif check in ("int>=0", "int>=1"):
                integer(f.name, int(check[-1]))
            elif check in ("number>0", "number>=0"):
                number(f.name, positive=check == "number>0")
        if self.gp_every > 1 and self.method not in PENALTY_KINDS:
            raise ValueError(f"gp_every > 1 (lazy regularisation) needs a penalty method "
                             f"({', '.join(PENALTY_KINDS)}), got method {self.method!r}")
        if self.precision == "fp16" and self.penalty_impl == "autograd":
            raise ValueError("penalty_impl 'autograd' has no GradScaler path: use precision "
                             "fp32 or bf16 with it, or the fused penalty with fp16")
        if not self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1) (0: no averaging), got "
                             f"{self.ema_decay!r}")
        for name in ("beta1", "beta2"):
            if not getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.batch_size % self.pac:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of pac "
                             f"({self.pac})")
        if self.pac > 1 and self.model not in ("pac", "auto"):
            raise ValueError(f"pac > 1 needs the packed critic (model 'pac'), got model "
                             f"{self.model!r}")
        if self.method == "sn" and self.model in ("pac", "resnet"):
            raise ValueError(f"method 'sn' (spectral norm) works with models 'mlp' and 'conv', "
                             f"not {self.model!r}")
        if self.critic_norm != "none" and self.model not in ("resnet", "auto"):
            raise ValueError(f"critic_norm (--critic-norm) {self.critic_norm!r} is the resnet "
                             f"critic's; model {self.model!r} has its own")
        if self.label_column is not None and self.dataset != "csv":
            raise ValueError(f"label_column (--label-column) names a CSV table's class column; "
                             f"dataset {self.dataset!r} is not a table")
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"device must be a string such as 'cpu', 'cuda' or 'auto', got "
                             f"{self.device!r}")
        self._check_schedule()
        # the data settings' defaults mean "not set": one set for a dataset without that data is
        # refused (the command line also refuses every other flag the run would not use)
        check_used(self, [n for n in UNSET_BY_DEFAULT
                          if getattr(self, n) != _FIELDS[n].default])
        return self

    def _check_schedule(self) -> None:
        horizon = self.lr_decay_steps
        if horizon is None:
            return
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"lr_decay_steps must be an int >= 1 (or None: steps), got "
                             f"{horizon!r}")
        if self.lr_decay == "linear" and self.steps > horizon:
            raise ValueError(
                f"steps {self.steps} (--steps) runs past step {horizon}, where the linear "
                f"learning-rate decay reaches 0 (lr_decay_steps, the schedule's horizon, "
                f"recorded in a run's checkpoint), so the steps after it would not train: also "
                f"pass --lr-decay-steps {self.steps} (or more); with --resume that is how a "
                f"decayed run is extended: the rest of its decay is stretched from the current "
                f"learning rate to 0 at that step, without a jump")

    def decay_horizon(self) -> int | None:
        """The step where a linear lr decay reaches 0: lr_decay_steps, else steps; None without
        a decay."""
        if self.lr_decay != "linear":
            return None
        return self.steps if self.lr_decay_steps is None else self.lr_decay_steps


_FIELDS = {f.name: f for f in dataclasses.fields(WGANGPConfig)}
# settings whose default means "not set" (validate() refuses one set where it is not used)
UNSET_BY_DEFAULT = ("data_path", "npz_key", "categorical", "image_size", "table_transform",
                    "lr_decay_steps")


def flag_name(name: str) -> str:
    """The command-line flag of a setting (--data for data_path)."""
    flag = _FIELDS[name].metadata.get("flag") if name in _FIELDS else None
    if flag is not None and flag.names:
        return flag.names[0]
    if flag is not None and flag.switch == "on/off":
        return "--[no-]" + name.replace("_", "-")
    return "--" + name.replace("_", "-")


def model_kind(config: WGANGPConfig) -> str:
    """The model family a config builds, as far as it is known before the data is read: mlp,
    conv, resnet or pac; "image" for --model auto on images (conv below 32x32, resnet from 32x32
    up: the size is known once the images are read)."""
    if config.model != "auto":
        return config.model
    kind = data_mod.KINDS[config.dataset]
    if kind == "tabular" or config.pac > 1:
        return "pac"
    return "image" if kind == "image" else "mlp"


# setting -> (whether a config uses it, what it is for): the rule behind "a flag the run does not
# use is refused, not ignored"
_USED = {
    "data_path": (lambda c: c.dataset in data_mod.FILE_DATASETS,
                  "names the file or folder of dataset csv, images, mnist, fashion-mnist or "
                  "cifar10"),
    "npz_key": (lambda c: c.dataset == "images", "chooses an array of an --images .npz file"),
    "categorical": (lambda c: c.dataset == "csv", "names columns of a --csv table"),
    "table_transform": (lambda c: c.dataset == "csv",
                        "encodes the numeric columns of a --csv table"),
    "image_size": (lambda c: data_mod.KINDS[c.dataset] == "image", "resizes image data"),
    "label_column": (lambda c: c.dataset == "csv", "names the class column of a --csv table"),
    "image_cache": (lambda c: c.dataset == "images", "holds the decoded cache of an --images "
                                                     "folder"),
    "max_image_pixels": (lambda c: c.dataset == "images", "limits the image files of an "
                                                          "--images folder"),
    "decode_workers": (lambda c: c.dataset == "images", "decodes an --images folder"),
    "fid_samples": (lambda c: data_mod.KINDS[c.dataset] == "image", "measures image runs"),
    "fid_every": (lambda c: data_mod.KINDS[c.dataset] == "image", "measures image runs"),
    "inception_weights": (lambda c: data_mod.KINDS[c.dataset] == "image",
                          "measures image runs"),
    "feature_maps": (lambda c: model_kind(c) in ("conv", "image"),
                     "sets the width of --model conv"),
    "resnet_width": (lambda c: model_kind(c) in ("resnet", "image"),
                     "sets the width of --model resnet"),
    "critic_norm": (lambda c: model_kind(c) in ("resnet", "image"),
                    "normalises the critic of --model resnet"),
    "hidden_dim": (lambda c: model_kind(c) not in ("conv", "resnet", "image"),
                   "sets the width of the mlp, pac and tabular models, not of --model conv "
                   "(--feature-maps) or resnet (--resnet-width)"),
    "generator_batchnorm": (lambda c: data_mod.KINDS[c.dataset] != "tabular"
                            and model_kind(c) not in ("conv", "resnet", "image"),
                            "switches BatchNorm in the MLP generator, which this run does not "
                            "build"),
    "lr_decay_steps": (lambda c: c.lr_decay == "linear",
                       "sets where --lr-decay linear reaches 0"),
    "lazy_adam_correction": (lambda c: c.gp_every > 1, "corrects Adam for --gp-every K > 1"),
    "lambda_gp": (lambda c: c.method in PENALTY_KINDS, "weights a penalty, which --method "
                                                       "clip and sn have not"),
    "backend": (lambda c: c.method in PENALTY_KINDS, "computes a penalty, which --method clip "
                                                     "and sn have not"),
    "penalty_impl": (lambda c: c.method in PENALTY_KINDS, "computes a penalty, which --method "
                                                          "clip and sn have not"),
    "lr": (lambda c: c.method != "clip", "is Adam's; --method clip trains with RMSprop at the "
                                         "original WGAN's lr 5e-5"),
    "beta1": (lambda c: c.method != "clip", "is Adam's; --method clip trains with RMSprop"),
    "beta2": (lambda c: c.method != "clip", "is Adam's; --method clip trains with RMSprop"),
}


def check_used(config: WGANGPConfig, given) -> None:
    """A ValueError for the first setting in `given` (names of settings the user set) that
    `config` does not use, naming its flag, what it is for and the run's dataset."""
    for name in given:
        rule = _USED.get(name)
        if rule is None or rule[0](config):
            continue
        what = f"dataset {config.dataset!r}"
        if name in ("feature_maps", "resnet_width", "critic_norm", "hidden_dim",
                    "generator_batchnorm"):
            kind = model_kind(config)
            what += (" with model 'auto' (conv or resnet for images)" if kind == "image"
                     else f" with model {kind!r}")
        elif name in ("lambda_gp", "backend", "penalty_impl", "lr", "beta1", "beta2"):
            what = f"method {config.method!r}"
        elif name in ("lr_decay_steps",):
            what = f"lr_decay {config.lr_decay!r}"
        elif name == "lazy_adam_correction":
            what = f"gp_every {config.gp_every}"
        hint = ""
        if name == "data_path":
            hint = (", or say what the file holds: --dataset csv, images, mnist, fashion-mnist "
                    "or cifar10 (or --csv / --images / --mnist PATH)")
        raise ValueError(f"{name} ({flag_name(name)}) {rule[1]}; {what} does not use it: drop "
                         f"{flag_name(name)}{hint}")
