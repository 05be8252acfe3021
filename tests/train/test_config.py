"""WGANGPConfig's field metadata: every setting's check is what validate() applies, and its Flag is
what `wgangp-fast train` parses (the command line keeps no list of its own)."""

from __future__ import annotations

import dataclasses

import pytest

from wgangp_fast import cli
from wgangp_fast.train import WGANGPConfig
from wgangp_fast.train.config import CHECKS, FLAG_GROUPS

FIELDS = {f.name: f for f in dataclasses.fields(WGANGPConfig)}
# settings without a flag: Adam's betas and weight clipping's values are set in Python; out_dir is
# --out, whose default depends on the dataset
NO_FLAG = {"clip_value", "clip_lr", "out_dir"}


def _options():
    parser = cli.build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    return {a.dest: a for a in train._actions}


def test_every_setting_but_a_few_has_a_flag_with_its_check():
    options = _options()
    assert {name for name, f in FIELDS.items() if "flag" not in f.metadata} == NO_FLAG
    for name, f in FIELDS.items():
        if name in NO_FLAG:
            assert name not in options
            continue
        flag, option = f.metadata["flag"], options[name]
        assert flag.group in FLAG_GROUPS
        names = list(flag.names or ["--" + name.replace("_", "-")])
        if flag.switch == "on/off":
            names.append(names[0].replace("--", "--no-", 1))
        assert option.option_strings == names, name
        assert option.default is None, name  # unset flags leave the preset's value
        check = flag.check or f.metadata.get("check")
        if isinstance(check, tuple):
            assert tuple(option.choices) == check, name
        elif check is not None:
            assert option.type is cli._PARSERS[check], name
    # what the command line adds that is not a setting
    assert {"csv", "images", "mnist", "out", "resume", "threads", "no_progress"} <= set(options)


def test_a_value_outside_a_check_is_refused_by_name():
    bad = {"int>=0": -1, "int>=1": 0, "number>0": 0.0, "number>=0": float("nan")}
    checked = [(name, f.metadata["check"]) for name, f in FIELDS.items()
               if "check" in f.metadata]
    assert {c for _, c in checked if not isinstance(c, tuple)} == set(CHECKS)
    for name, check in checked:
        value = "no-such-value" if isinstance(check, tuple) else bad[check]
        with pytest.raises(ValueError, match=f"^{name} must be"):
            WGANGPConfig(**{name: value}).validate()
        with pytest.raises(ValueError, match=f"^{name} must be"):
            WGANGPConfig(**{name: True if not isinstance(check, tuple) else None}).validate()


def test_the_flags_set_the_settings():
    args = cli.build_parser().parse_args([
        "train", "--data", "t.csv", "--dataset", "csv", "--categorical", "a", "b", "--batch",
        "20", "--eval-samples", "300", "--lambda-gp", "0.5", "--no-generator-batchnorm",
        "--lazy-adam-correction", "--gp-every", "2", "--step-mode", "auto"])
    values = cli._overrides(args)
    assert values == {"data_path": "t.csv", "dataset": "csv", "categorical": ("a", "b"),
                      "batch_size": 20, "n_eval_samples": 300, "lambda_gp": 0.5,
                      "generator_batchnorm": False, "lazy_adam_correction": True, "gp_every": 2,
                      "step_mode": "auto"}
    cfg = WGANGPConfig.for_dataset(**values)
    assert (cfg.pac, cfg.batch_size, cfg.lambda_gp) == (10, 20, 0.5)  # the csv preset below
