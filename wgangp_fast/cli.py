"""Command line: `wgangp-fast train ...` / `python -m wgangp_fast train ...`, and `bench ...`.

    wgangp-fast train                                  # ring8, WGAN-GP, CPU-sized defaults
    wgangp-fast train --dataset grid25 --steps 4000 --out runs/grid25
    wgangp-fast train --csv table.csv --pac 10 --out runs/table
    wgangp-fast train --out runs/ring8 --resume --steps 6000
    wgangp-fast train --data table.csv --sample-every 200 --tensorboard --out runs/table
    wgangp-fast sample runs/ring8 -n 10000 --out ring8.npy   # samples in the data's units
    wgangp-fast train --precision bf16 --gp-every 4 --lazy-adam-correction
    torchrun --nproc_per_node 2 -m wgangp_fast train --dataset grid25   # data parallel
    wgangp-fast bench --help                           # the benchmark suite
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import os
import sys
from typing import List

__all__ = ["build_parser", "main"]


def _checked(convert, ok, what: str):
    """An argparse `type`: convert(text), accepted where ok(value); else "expected {what}"."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    return parse


_positive_int = _checked(int, lambda v: v >= 1, "a positive integer")
_non_negative_int = _checked(int, lambda v: v >= 0, "an integer >= 0")
# nan fails the comparisons, so both float types refuse it; inf is refused by name.
_positive_float = _checked(float, lambda v: v > 0 and v != float("inf"), "a finite positive number")
_non_negative_float = _checked(float, lambda v: v >= 0 and v != float("inf"),
                               "a finite number >= 0")
# the argparse type of each check a setting may carry (wgangp_fast.train.config.CHECKS)
_PARSERS = {"int>=0": _non_negative_int, "int>=1": _positive_int, "number>0": _positive_float,
            "number>=0": _non_negative_float}


def _preset_keys() -> frozenset:
    from .train.config import DATASET_PRESETS

    return frozenset(k for preset in DATASET_PRESETS.values() for k in preset)


def _missing_extras(args: argparse.Namespace, dataset: str | None,
                    table_transform: str = "mode") -> str:
    """'' when every optional package this run needs imports, else an error naming them (checked
    before training: the pictures and metrics need them after it)."""
    needs = [("matplotlib", "the pictures samples.png and curves.png"),
             ("scipy", "the metrics: exact W1 by optimal assignment, Frechet distance")]
    if not args.no_progress:
        needs.append(("tqdm", "the progress bar, or pass --no-progress"))
    if dataset == "digits":
        needs.append(("sklearn", "the bundled digits and their classifier metrics"))
    if dataset == "csv" and table_transform == "mode":
        needs.append(("sklearn", "the Gaussian mixtures of --table-transform mode"))
    missing = [f"{module} ({why})" for module, why in needs
               if importlib.util.find_spec(module) is None]
    if not missing:
        return ""
    return ("wgangp-fast train needs optional packages that are not installed: "
            + "; ".join(missing) + ". Install them with pip install 'wgangp_fast[train]'")


def _rank_from_env() -> int:
    try:
        return int(os.environ.get("RANK") or 0)
    except ValueError:
        return 0  # distributed.setup reports the bad value by name


def _config_flags():
    """(field, flag) of every WGANGPConfig setting on the command line; the flag's dest is the
    field's name."""
    from .train.config import WGANGPConfig

    return [(f, f.metadata["flag"]) for f in dataclasses.fields(WGANGPConfig)
            if "flag" in f.metadata]


def _add_config_flag(group, field, flag) -> None:
    """The argparse option of one setting, from its Flag and check (wgangp_fast.train.config)."""
    names = flag.names or ("--" + field.name.replace("_", "-"),)
    help_text = flag.help
    if flag.switch != "on" and (help_text is None or "default" not in help_text):
        # the setting's own default, which a dataset's preset may replace (the epilog lists them)
        shown = f"default {field.default}" + (", or the preset's" if field.name in _preset_keys()
                                              else "")
        help_text = f"{help_text} ({shown})" if help_text else shown
    kw = {"dest": field.name, "help": help_text, "default": None}
    if flag.switch == "on":
        kw["action"] = "store_true"
    elif flag.switch == "on/off":
        kw["action"] = argparse.BooleanOptionalAction
    else:
        check = flag.check or field.metadata.get("check")
        if isinstance(check, tuple):
            kw["choices"] = check
        elif check is not None:
            kw["type"] = _PARSERS[check]
        kw.update({k: v for k, v in (("metavar", flag.metavar), ("nargs", flag.nargs))
                   if v is not None})
    group.add_argument(*names, **kw)


def _presets_epilog() -> str:
    """What each dataset's preset sets, a wrapped paragraph per dataset, for `train --help`."""
    import textwrap

    from .train.config import DATASET_PRESETS, flag_name

    def shown(key, value):
        flag = flag_name(key)
        if isinstance(value, bool):
            return flag.replace("[no-]", "" if value else "no-")
        return f"{flag} {value}"

    lines = ["presets (what --dataset NAME sets beyond the defaults; a flag you give wins):"]
    for name, preset in DATASET_PRESETS.items():
        text = f"{name}: " + ", ".join(shown(k, v) for k, v in preset.items())
        lines += textwrap.wrap(text, 78, initial_indent="  ", subsequent_indent="    ",
                               break_on_hyphens=False)
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    from .train.config import FLAG_GROUPS

    parser = argparse.ArgumentParser(
        prog="wgangp-fast",
        description="Train WGAN-GP models with the fused gradient penalty, or run the benchmarks.")
    sub = parser.add_subparsers(dest="command", metavar="{train,sample,bench}")
    sub.required = True
    sub.add_parser("bench", help="run the benchmark suite (wgangp-fast bench --help)",
                   add_help=False)
    t = sub.add_parser(
        "train", help="train a WGAN-GP and write samples, pictures, metrics and a checkpoint",
        description="Train a WGAN-GP (Gulrajani et al., Algorithm 1). A setting you leave out "
                    "takes the dataset's preset (listed below), else its default: the "
                    "paper's Algorithm 1 (lambda 10, n_critic 5, Adam 1e-4 with betas 0 and "
                    "0.9) with latent 100, hidden width 256, batch 64, seed 42.",
        epilog=_presets_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = {name: t.add_argument_group(name) for name in FLAG_GROUPS}
    for field, flag in _config_flags():
        _add_config_flag(groups[flag.group], field, flag)
        if field.name == "dataset":  # the other ways to name the data, beside --dataset
            g = groups[flag.group]
            g.add_argument("--csv", metavar="PATH", help="a CSV table (sets --dataset csv)")
            g.add_argument("--images", metavar="PATH", help="a folder of image files (PNG, "
                           "JPEG, ...; class subfolders give labels) or a .npy/.npz image array "
                           "(sets --dataset images)")
            g.add_argument("--mnist", metavar="DIR", help="a local MNIST folder (sets --dataset "
                           "mnist)")
            g.add_argument("--fashion-mnist", metavar="DIR", help="a local Fashion-MNIST folder "
                           "(sets --dataset fashion-mnist)")
            g.add_argument("--cifar10", metavar="DIR", help="a local CIFAR-10 folder (binary or "
                           "python version; sets --dataset cifar10)")
    # the flags of the command rather than of the run's settings
    r = groups["run"]
    r.add_argument("--out", metavar="DIR", help="output folder (default runs/<dataset>)")
    r.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint.pt (with --steps: the new total)")
    r.add_argument("--threads", type=_positive_int,
                   help="torch CPU threads (1 is fastest for the small 2-D models on a busy "
                        "machine)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_sample_parser(sub)
    return parser


def _add_sample_parser(sub) -> None:
    from .train.sampling import FORMATS

    s = sub.add_parser(
        "sample", help="draw samples from a trained run, in the data's own units",
        description="N samples of a trained run (its output folder or checkpoint file; the "
                    "data file need not be there), in the data's units and format: .npy (uint8 "
                    "[N, H, W, C] images, float32 points), .csv (a table with its columns), "
                    ".png (one picture: an image grid, a point cloud, column histograms) or a "
                    "folder (one PNG per image). From the averaged generator where the run kept "
                    "one.")
    s.add_argument("source", metavar="RUN_OR_CHECKPOINT",
                   help="a run's output folder, or a checkpoint.pt")
    s.add_argument("-n", type=_positive_int, required=True, metavar="N",
                   help="how many samples")
    s.add_argument("--out", required=True, metavar="PATH",
                   help="where: its suffix picks the format (.npy, .csv, .png; none: a folder)")
    s.add_argument("--format", choices=FORMATS, help="npy, csv, png (a folder of PNG files) or "
                                                     "grid (one PNG), instead of --out's suffix")
    s.add_argument("--seed", type=_non_negative_int, default=0,
                   help="seed of the latents (default 0)")
    s.add_argument("--no-ema", action="store_true",
                   help="the trained weights, not their moving average (runs with --ema-decay)")
    s.add_argument("--batch", type=_positive_int, default=1024, metavar="B",
                   help="samples generated at a time (default 1024)")
    s.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    s.add_argument("--label", metavar="CLASS",
                   help="a conditional run's class (its name, or its index): every sample of "
                        "it; default: classes drawn at the data's frequencies and written beside "
                        "the samples (<out>_labels.npy, the CSV's class column, a subfolder per "
                        "class)")
    s.add_argument("--threads", type=_positive_int, help="torch CPU threads")


def _error(msg: str) -> int:
    print(f"wgangp-fast: error: {msg}", file=sys.stderr)
    return 2


# the flags that name the data and the dataset each implies
_SOURCES = (("csv", "csv"), ("images", "images"), ("mnist", "mnist"),
            ("fashion-mnist", "fashion-mnist"), ("cifar10", "cifar10"))


def _overrides(args: argparse.Namespace) -> dict:
    from .train.data import dataset_for_path

    sources = [(flag, name) for flag, name in _SOURCES if getattr(args, flag.replace("-", "_"))]
    if len(sources) > 1:
        raise ValueError("give only one of " + ", ".join(f"--{f}" for f, _ in _SOURCES))
    values = {field.name: getattr(args, field.name) for field, _ in _config_flags()}
    if sources:
        flag, name = sources[0]
        if args.dataset not in (None, name):
            raise ValueError(f"--{flag} implies --dataset {name}, got --dataset {args.dataset}")
        if args.data_path is not None:
            raise ValueError(f"give the path once: --{flag} PATH or --data PATH")
        values["dataset"], values["data_path"] = name, getattr(args, flag.replace("-", "_"))
    elif args.data_path is not None and args.dataset is None and not args.resume:
        # --data alone: the file dataset its name says (a .csv table, .npy / .npz images)
        values["dataset"] = dataset_for_path(args.data_path)
    if values["categorical"] is not None:
        values["categorical"] = tuple(values["categorical"])
    return {k: v for k, v in values.items() if v is not None}


# metrics.json's entries that describe the run rather than its samples
_RUN_KEYS = ("dataset", "model", "method", "steps", "critic_iters", "train_seconds",
             "steps_per_second", "device", "world_size", "precision", "step_mode", "gp_every",
             "ema_decay", "amp_skipped_steps", "final_wasserstein_estimate", "final_gp",
             "n_samples", "min_count")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _quality(metrics: dict) -> dict:
    """The sample-quality figures metrics.json holds (its numbers that are not about the run),
    whatever the dataset measures."""
    return {k: v for k, v in metrics.items() if _is_number(v) and k not in _RUN_KEYS}


def _summary(metrics: dict) -> str:
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    shown = dict(_quality(metrics))
    shown.update({k: metrics[k] for k in ("final_wasserstein_estimate", "final_gp",
                                          "train_seconds", "steps_per_second")
                  if _is_number(metrics.get(k))})
    lines = [f"  {k:30s} {fmt(v)}" for k, v in shown.items()]
    raw = metrics.get("raw_generator")
    if raw:
        figures = ", ".join(f"{k} {fmt(v)}" for k, v in _quality(raw).items())
        lines.append(f"  without EMA (trained weights): {figures}")
    return "\n".join(lines)


def _train(args: argparse.Namespace) -> int:
    from .train import distributed

    try:
        # what the run holds until it ends (the output folder's lock)
        with contextlib.ExitStack() as held:
            return _train_run(args, held)
    finally:
        # every rank reaches this point, so the barrier lets rank 0 finish writing its outputs
        # before the process group goes away
        distributed.barrier()
        distributed.cleanup()


def _last_good(ckpt: str) -> str:
    """'last good checkpoint: PATH (step N)' where the checkpoint on disk passes the load
    checks, else what is wrong with it."""
    from .train import WGANGPTrainer

    try:
        step = WGANGPTrainer.read_checkpoint(ckpt)["step"]
    except FileNotFoundError:
        return "no checkpoint was written"
    except ValueError as exc:
        return f"no good checkpoint: {exc}"
    return f"last good checkpoint: {ckpt} (step {step})"


def _train_run(args: argparse.Namespace, held: contextlib.ExitStack) -> int:
    import torch

    from .train import (
        CHECKPOINT_NAME,
        CheckpointWriteError,
        NonFiniteLossError,
        OutputFolderError,
        TrainingInterrupted,
        WGANGPConfig,
        WGANGPTrainer,
        lock_output_folder,
    )
    from .train.config import RESUMABLE, check_used
    from .train.logs import missing_tensorboard

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        values = _overrides(args)
        dataset = values.get("dataset", "ring8")
        missing = _missing_extras(args, None if args.resume else dataset,
                                  values.get("table_transform", "mode"))
        if missing:
            raise ValueError(missing)
        if values.get("tensorboard") and missing_tensorboard():
            raise ValueError(missing_tensorboard())
        if not args.resume:
            # every flag given must be one this run uses: refused here, before any work
            check_used(WGANGPConfig.for_dataset(dataset, **{k: v for k, v in values.items()
                                                            if k != "dataset"}), values)
        out = args.out or os.path.join("runs", dataset)
        if os.path.exists(out) and not os.path.isdir(out):
            raise ValueError(f"--out {out} exists and is not a folder")
        ckpt = os.path.join(out, CHECKPOINT_NAME)
        if _rank_from_env() == 0:
            # held for the whole run, outputs included: a second run on this folder would
            # overwrite the checkpoint and outputs
            lock = held.enter_context(lock_output_folder(out))
            if lock.stale_holder:
                print(f"note: took over the lock of an earlier run on {out} "
                      f"({lock.stale_holder}, no longer running)", file=sys.stderr)
            if lock.removed:
                print(f"note: removed {len(lock.removed)} temporary checkpoint file(s) that an "
                      f"interrupted write left in {out}", file=sys.stderr)
        if args.resume:
            if not os.path.isfile(ckpt):
                raise FileNotFoundError(f"--resume: no checkpoint at {ckpt}")
            saved = WGANGPTrainer.read_checkpoint(ckpt)["config"]
            missing = _missing_extras(args, saved.get("dataset"),
                                      saved.get("table_transform", "mode"))
            if missing:
                raise ValueError(missing)
            clash = sorted(k for k, v in values.items()
                           if k not in RESUMABLE and saved.get(k) != v
                           and not (k == "categorical" and tuple(saved.get(k) or ()) == v))
            if clash:
                raise ValueError(f"--resume continues the saved run; these settings differ from "
                                 f"the checkpoint's and cannot change: {', '.join(clash)}")
            resumable = {k: v for k, v in values.items() if k in RESUMABLE}
            check_used(dataclasses.replace(WGANGPConfig.from_dict(saved), **resumable),
                       resumable)
            trainer = WGANGPTrainer.from_checkpoint(ckpt, out_dir=out, **resumable)
            if trainer.step >= trainer.config.steps:
                print(f"checkpoint {ckpt} is already at step {trainer.step} (>= --steps "
                      f"{trainer.config.steps}); writing outputs only")
        else:
            values.setdefault("checkpoint_every", 500)
            config = WGANGPConfig.for_dataset(dataset, out_dir=out,
                                              **{k: v for k, v in values.items()
                                                 if k != "dataset"})
            trainer = WGANGPTrainer(config)
        trainer.check_output_folder(out)
    except (ValueError, TypeError, FileNotFoundError, OutputFolderError, ImportError) as exc:
        return _error(str(exc))
    if trainer.is_main_process:
        for line in trainer.data_notes:
            print(f"note: {line}", file=sys.stderr)
        trainer.on_note = lambda line: print(f"note: {line}", file=sys.stderr)

    cfg = trainer.config
    if trainer.is_main_process:
        ranks = (f" x {trainer.world_size} ranks (batch per rank)"
                 if trainer.world_size > 1 else "")
        extras = "".join([f", precision {cfg.precision}" if cfg.precision != "fp32" else "",
                          f", step mode {cfg.step_mode}" if cfg.step_mode != "eager" else "",
                          f", gp every {cfg.gp_every}" if cfg.gp_every > 1 else "",
                          f", EMA {cfg.ema_decay}" if cfg.ema_decay > 0 else "",
                          f", conditional on {len(trainer.class_names)} classes"
                          if trainer.class_names else "",
                          f", lr decaying to 0 at step {cfg.decay_horizon()}"
                          if cfg.decay_horizon() is not None else ""])
        print(f"training {cfg.dataset} ({trainer.model_kind} models, method {cfg.method}, "
              f"{cfg.steps} steps, batch {cfg.batch_size}, pac {cfg.pac}, n_critic "
              f"{cfg.n_critic}, lr {cfg.lr}{extras}) on {trainer.device}{ranks}; output in {out}"
              + (f"; resumed at step {trainer.step}" if args.resume else ""))
    try:
        trainer.train(progress=not args.no_progress)
    except NonFiniteLossError as exc:
        if not trainer.is_main_process:
            return 1
        print(f"wgangp-fast: {exc}", file=sys.stderr)
        print(_last_good(ckpt), file=sys.stderr)
        return 1
    except CheckpointWriteError as exc:
        print(f"wgangp-fast: error: {exc}", file=sys.stderr)
        print(_last_good(ckpt), file=sys.stderr)
        return 1
    except TrainingInterrupted as exc:
        print(f"\nwgangp-fast: {exc}; continue with --resume", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print(f"\ninterrupted at step {trainer.step}; continue with --resume (from the last "
              f"checkpoint in {out})", file=sys.stderr)
        return 130
    metrics = trainer.write_outputs(out)
    if trainer.is_main_process:
        print(f"done: {trainer.step} steps in {trainer.train_seconds:.1f} s"
              + (f" (step mode {trainer.step_mode})" if cfg.step_mode != "eager" else ""))
        print(_summary(metrics))
        extra = "".join([", samples.csv" if cfg.dataset == "csv" else "",
                         ", samples_labels.npy" if trainer.class_names else "",
                         ", classes/ (a grid per class)"
                         if trainer.class_names and trainer.dataset.kind == "image" else "",
                         ", samples/" if cfg.sample_every else "",
                         ", tensorboard/" if cfg.tensorboard else ""])
        print(f"outputs in {out}/: samples.png, curves.png, samples.npy, metrics.json, "
              f"history.csv, config.json, {CHECKPOINT_NAME}{extra}")
        print(json.dumps(_quality(metrics)))
    return 0


def _sample(args: argparse.Namespace) -> int:
    """`wgangp-fast sample`: N samples of a trained run written to --out."""
    import torch

    from .train import CheckpointError
    from .train.sampling import checkpoint_of, sample, sample_format

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        path = checkpoint_of(args.source)
        state = torch.load(path, map_location="cpu", weights_only=True)
        kind = (state.get("data") or {}).get("kind") if isinstance(state, dict) else None
        fmt = sample_format(args.out, kind or "points", args.format)
        label = args.label
        if label is not None and label.isdigit() and label not in (
                (state.get("data") or {}).get("class_names") or ()):
            label = int(label)  # an index, unless a class is named by those digits
        written = sample(args.source, args.n, args.out, seed=args.seed, ema=not args.no_ema,
                         batch_size=args.batch, format=fmt, device=args.device, label=label)
    except (ValueError, FileNotFoundError, CheckpointError, OSError) as exc:
        return _error(str(exc))
    has_ema = "generator_ema" in state
    weights = "averaged (EMA) weights" if has_ema and not args.no_ema else "trained weights"
    classes = (state.get("data") or {}).get("class_names") if state.get("class_names") else None
    which = ""
    if classes and args.label is not None:
        which = f", class {args.label}"
    elif classes:
        beside = {"npy": f"; their classes in {os.path.splitext(written)[0]}_labels.npy",
                  "csv": "; their classes in the class column",
                  "png": "; a subfolder per class"}.get(fmt, "")
        which = f", classes at the data's frequencies{beside}"
    print(f"wrote {args.n} samples of {path} (step {state['step']}, {weights}, seed "
          f"{args.seed}{which}) to {written} ({fmt})")
    return 0


def main(argv: List[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        from .bench import main as bench_main

        return bench_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train":
        return _train(args)
    if args.command == "sample":
        return _sample(args)
    parser.error(f"unknown command {args.command!r}")
    return 2
