"""Every flag a run does not use is refused, not ignored (one line, before any work); --data
alone names its dataset by its extension; the closing summary reports what metrics.json holds
for every kind of dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wgangp_fast import cli
from wgangp_fast.train import WGANGPConfig

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--steps", "2", "--batch", "20", "--latent-dim", "4", "--n-critic", "1",
        "--eval-samples", "200", "--no-progress", "--device", "cpu"]
TABLE = "x,n,kind\n" + "".join(f"{1.5 + (i % 7) * 0.7:.2f},{(i * 7) % 5 + 1},{'ab'[i % 2]}\n"
                               for i in range(60))


@pytest.mark.parametrize("argv, flag, why", [
    (["--data", "{tmp}/missing.csv", "--dataset", "ring8"], "--data",
     "names the file or folder of dataset csv, images, mnist, fashion-mnist or cifar10; dataset "
     "'ring8' does not use it"),
    (["--data", "{tmp}/t.csv", "--dataset", "digits"], "--data", "dataset 'digits'"),
    (["--categorical", "a"], "--categorical", "names columns of a --csv table"),
    (["--table-transform", "standard", "--dataset", "digits"], "--table-transform",
     "encodes the numeric columns of a --csv table"),
    (["--image-size", "16"], "--image-size", "resizes image data; dataset 'ring8'"),
    (["--image-size", "16", "--csv", "{tmp}/t.csv"], "--image-size", "dataset 'csv'"),
    (["--npz-key", "x", "--dataset", "digits"], "--npz-key",
     "chooses an array of an --images .npz file"),
    (["--feature-maps", "8", "--dataset", "digits"], "--feature-maps",
     "dataset 'digits' with model 'mlp'"),
    (["--hidden-dim", "8", "--dataset", "digits", "--model", "conv"], "--hidden-dim",
     "not of --model conv"),
    (["--no-generator-batchnorm", "--csv", "{tmp}/t.csv"], "--[no-]generator-batchnorm",
     "BatchNorm in the MLP generator"),
    (["--lr-decay-steps", "9", "--dataset", "digits"], "--lr-decay-steps",
     "lr_decay 'none' does not use it"),
    (["--lazy-adam-correction"], "--lazy-adam-correction", "gp_every 1 does not use it"),
    (["--lambda", "5", "--method", "sn"], "--lambda", "method 'sn' does not use it"),
    (["--lr", "1e-3", "--method", "clip"], "--lr", "RMSprop"),
    (["--beta2", "0.99", "--method", "clip"], "--beta2", "method 'clip'"),
    (["--backend", "cpu", "--method", "clip"], "--backend", "method 'clip'"),
])
def test_a_flag_the_run_does_not_use_is_refused_before_work(tmp_path, capsys, argv, flag, why):
    (tmp_path / "t.csv").write_text(TABLE)
    out = tmp_path / "run"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert cli.main(["train", "--out", str(out), "--no-progress", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("wgangp-fast: error: ")
    assert f"({flag})" in err and why in err and f"drop {flag}" in err
    assert not out.exists()


def test_the_python_config_refuses_the_data_settings_it_would_ignore():
    with pytest.raises(ValueError, match=r"data_path \(--data\) names the file"):
        WGANGPConfig.for_dataset("ring8", data_path="x.csv").validate()
    with pytest.raises(ValueError, match=r"categorical \(--categorical\)"):
        WGANGPConfig.for_dataset("digits", categorical=("a",)).validate()
    WGANGPConfig.for_dataset("csv", data_path="x.csv", categorical=("a",)).validate()


def test_data_alone_is_taken_as_the_file_dataset_its_extension_names(tmp_path, capsys):
    (tmp_path / "t.csv").write_text(TABLE)
    assert cli.main(["train", "--data", str(tmp_path / "t.csv"), "--out", str(tmp_path / "c"),
                     "--pac", "5", "--hidden-dim", "8", *TINY]) == 0
    assert json.loads((tmp_path / "c" / "config.json").read_text())["dataset"] == "csv"
    shapes = np.random.default_rng(0).integers(0, 256, (30, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "shapes.npz", x=shapes)
    assert cli.main(["train", "--data", str(tmp_path / "shapes.npz"), "--out",
                     str(tmp_path / "i"), "--feature-maps", "8", "--fid-samples", "0",
                     *TINY]) == 0
    config = json.loads((tmp_path / "i" / "config.json").read_text())
    assert config["dataset"] == "images" and config["data_path"].endswith("shapes.npz")
    capsys.readouterr()
    assert cli.main(["train", "--data", str(tmp_path / "t.txt"), "--out",
                     str(tmp_path / "x"), *TINY]) == 2
    assert "cannot tell the dataset from the name" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("dataset", ["digits", "csv", "ring8"])
def test_the_closing_summary_reports_the_datasets_metrics(tmp_path, capsys, dataset):
    (tmp_path / "t.csv").write_text(TABLE)
    source = {"digits": ["--dataset", "digits"], "csv": ["--csv", str(tmp_path / "t.csv"),
                                                        "--pac", "5"],
              "ring8": ["--dataset", "ring8"]}[dataset]
    out = tmp_path / "run"
    assert cli.main(["train", *source, "--out", str(out), "--hidden-dim", "8", *TINY]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    last = json.loads(lines[-1])
    metrics = json.loads((out / "metrics.json").read_text())
    expected = {"digits": "frechet_distance", "csv": "column_quantile_error_max",
                "ring8": "modes_covered"}[dataset]
    assert last and expected in last and last[expected] == metrics[expected]
    # every figure printed is metrics.json's, none about the run itself
    assert all(metrics[k] == v for k, v in last.items())
    assert "train_seconds" not in last and "steps" not in last
    assert any(line.split()[0] == expected for line in lines if line.startswith("  "))
