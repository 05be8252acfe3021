"""`wgangp-fast train --images DIR` as a user runs it: the notes before training, a conditional
run's outputs, the FID line where Inception's weights are absent, the extras' messages."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from wgangp_fast import cli
from wgangp_fast.train import fid as fid_mod

from .files import write_class_pngs

PIL = pytest.importorskip("PIL.Image")
pytest.importorskip("torchvision")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def pets(tmp_path):
    rng = np.random.default_rng(0)
    root = write_class_pngs(tmp_path / "pets", (10, 12, 3), 4, rng)
    PIL.fromarray(rng.integers(0, 255, (10, 12), dtype=np.uint8)).save(root / "owl" / "g.png")
    return root


def _train(tmp_path, *argv):
    return cli.main(["train", "--out", str(tmp_path / "run"), "--no-progress", "--steps", "2",
                     "--batch", "8", "--n-critic", "1", "--image-cache", str(tmp_path / "c"),
                     *argv])


def test_a_conditional_folder_run(pets, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fid_mod, "_reachable", lambda *a: False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    code = _train(tmp_path, "--images", str(pets), "--image-size", "8", "--conditional",
                  "--model", "conv", "--feature-maps", "4", "--fid-samples", "20")
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "note: converted 1 grey-scale image of 13 to RGB (e.g. owl/g.png)" in err
    assert "note: decoded 13 images (8x8, 3 channels)" in err
    skipped = [line for line in err.splitlines() if "FID / KID skipped" in line]
    assert len(skipped) == 1 and "weights-inception-2015-12-05-6726825d.pth" in skipped[0]
    assert "conditional on 3 classes" in out and "classes/ (a grid per class)" in out
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "classes").iterdir()) == ["0-cat.png", "1-dog.png",
                                                                   "2-owl.png"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["classes"] == ["cat", "dog", "owl"] and "fid" not in metrics
    # resumed: the cache is found (no second "decoded" line), the conversion still said
    code = _train(tmp_path, "--images", str(pets), "--image-size", "8", "--conditional",
                  "--model", "conv", "--feature-maps", "4", "--resume", "--steps", "3",
                  "--fid-samples", "0")
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "decoded" not in err and "converted 1 grey-scale image" in err


def test_folder_errors_exit_2_with_one_line(pets, tmp_path, capsys):
    (pets / "dog" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    code = _train(tmp_path, "--images", str(pets), "--image-size", "8")
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"wgangp-fast: error: {pets / 'dog' / 'bad.jpg'}: ")
    assert err.count("\n") == 1


def test_without_torchvision_the_message_names_the_extra(pets, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    code = _train(tmp_path, "--images", str(pets))
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'wgangp_fast[images]'" in err and err.count("\n") == 1


def test_new_flags_parse_into_settings():
    args = cli.build_parser().parse_args([
        "train", "--cifar10", "/data", "--conditional", "--model", "resnet", "--resnet-width",
        "32", "--critic-norm", "layer", "--fid-every", "100", "--fid-samples", "2000",
        "--inception-weights", "w.pth", "--max-image-pixels", "1000", "--decode-workers", "2",
        "--image-cache", "c"])
    values = cli._overrides(args)
    assert values["dataset"] == "cifar10" and values["data_path"] == "/data"
    assert values["conditional"] is True and values["resnet_width"] == 32
    assert values["critic_norm"] == "layer" and values["fid_every"] == 100
    assert values["max_image_pixels"] == 1000 and values["decode_workers"] == 2
    for bad in (["--fid-every", "-1"], ["--max-image-pixels", "0"], ["--critic-norm", "batch"]):
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args(["train", *bad])
