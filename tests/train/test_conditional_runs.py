"""Conditional runs and image models in the trainer: labelled data, G(z, label), samples and
grids per class, checkpoints with their class names, resume, and the model `auto` picks."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from wgangp_fast.train import WGANGPConfig, WGANGPTrainer
from wgangp_fast.train.checkpoint import CheckpointError
from wgangp_fast.train.models_conditional import ConditionalGenerator, ProjectionCritic
from wgangp_fast.train.models_resnet import ResNetCritic

from ..files import write_class_pngs

pytestmark = pytest.mark.usefixtures("one_thread")
PIL = pytest.importorskip("PIL.Image")


def small(dataset="digits", **kw):
    settings = dict(steps=3, batch_size=16, hidden_dim=8, latent_dim=4, n_critic=2,
                    device="cpu", n_eval_samples=200, lr_warmup=0, fid_samples=0)
    settings.update(kw)
    return WGANGPConfig.for_dataset(dataset, **settings)


@pytest.fixture
def pets(tmp_path):
    """16x16 PNGs in three class subfolders (a colour cue per class)."""
    return write_class_pngs(tmp_path / "pets", (16, 16, 3), 6, np.random.default_rng(0))


def _weights(t):
    return [p.detach().clone() for p in list(t.generator.parameters())
            + list(t.critic.parameters())]


def test_conditional_digits_run_draws_each_class_on_request(tmp_path):
    t = WGANGPTrainer(small(conditional=True, out_dir=str(tmp_path)))
    assert isinstance(t.generator, ConditionalGenerator)
    assert isinstance(t.critic, ProjectionCritic)
    assert t.class_names == [str(k) for k in range(10)]
    t.train()
    seven = t.generate_samples(5, seed=0, labels=7)
    assert seven.shape == (5, 1, 8, 8)
    torch.testing.assert_close(seven, t.generate_samples(5, seed=0, labels="7"))
    torch.testing.assert_close(seven, t.generate_samples(5, seed=0, labels=[7] * 5))
    assert not torch.allclose(seven, t.generate_samples(5, seed=0, labels=3))
    for bad, match in ((10, r"class index 10 is outside 0..9"), ("x", "no class named 'x'"),
                       ([1, 2], "2 labels for 5 samples")):
        with pytest.raises(ValueError, match=match):
            t.generate_samples(5, labels=bad)
    metrics = t.write_outputs()
    assert len(metrics["class_accuracy"]) == 10 and metrics["classes"] == t.class_names
    labels = np.load(tmp_path / "samples_labels.npy")
    assert labels.shape == (2500,) and set(labels.tolist()) == set(range(10))
    grids = sorted(p.name for p in (tmp_path / "classes").iterdir())
    assert grids == sorted(f"{k}-{k}.png" for k in range(10))
    grid, rows = t.class_grid()
    assert grid.shape == (80, 1, 8, 8) and rows == t.class_names
    with pytest.raises(ValueError, match="not conditional"):
        WGANGPTrainer(small()).generate_samples(3, labels=1)


def test_conditional_runs_need_labels():
    with pytest.raises(ValueError, match="--conditional needs a labelled dataset .* 'ring8'"):
        WGANGPTrainer(small("ring8", conditional=True))


def test_image_folder_conditional_run_resumes_bit_for_bit(pets, tmp_path):
    cfg = dict(data_path=str(pets), image_cache=str(tmp_path / "cache"), conditional=True,
               model="conv", feature_maps=4, steps=4)
    straight = WGANGPTrainer(small("images", **cfg))
    straight.train()
    first = WGANGPTrainer(small("images", **cfg, out_dir=str(tmp_path / "run")))
    assert first.class_names == ["cat", "dog", "owl"]
    first.train(steps=2)
    ckpt = first.checkpoint_path()
    state = WGANGPTrainer.read_checkpoint(ckpt)
    assert state["class_names"] == ["cat", "dog", "owl"]
    resumed = WGANGPTrainer.from_checkpoint(ckpt)
    resumed.train()
    for a, b in zip(_weights(straight), _weights(resumed)):
        assert torch.equal(a, b)
    # another class list is another run's data
    (pets / "owl").rename(pets / "bat")
    with pytest.raises(CheckpointError, match=r"classes were \['cat', 'dog', 'owl'\]"):
        WGANGPTrainer.from_checkpoint(ckpt)


@pytest.mark.parametrize("mode", ["compile", "graph"])
def test_conditional_trainer_in_the_other_step_modes(mode):
    options = {"compile_options": {"backend": "aot_eager"}}
    if mode == "graph":
        options["simulate_graphs"] = True
    runs = {}
    for m in ("eager", mode):
        t = WGANGPTrainer(small(conditional=True, step_mode=m), step_options=options)
        t.train()
        runs[m] = _weights(t)
    for a, b in zip(runs["eager"], runs[mode]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_csv_label_column_conditional_run(tmp_path):
    path = tmp_path / "t.csv"
    rng = np.random.default_rng(0)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["x", "kind", "y"])
        for i in range(40):
            kind = ["a", "b"][i % 2]
            w.writerow([f"{rng.normal() + (3 if kind == 'b' else 0):.3f}", kind, i % 5])
    t = WGANGPTrainer(small("csv", data_path=str(path), label_column="kind", conditional=True,
                            batch_size=20, pac=5, out_dir=str(tmp_path / "o")))
    assert t.class_names == ["a", "b"] and t.dataset.columns == ["x", "y"]
    t.train()
    t.write_outputs()
    rows = list(csv.reader(open(tmp_path / "o" / "samples.csv")))
    assert rows[0] == ["x", "y", "kind"] and {r[2] for r in rows[1:]} == {"a", "b"}
    with pytest.raises(ValueError, match=r"--label-column 'nope' is not a column .* x, kind, y"):
        WGANGPTrainer(small("csv", data_path=str(path), label_column="nope", batch_size=20))
    with pytest.raises(ValueError, match="label_column .* dataset 'digits' is not a table"):
        WGANGPTrainer(small(label_column="kind"))


@pytest.mark.parametrize("size,kind", [(8, "conv"), (16, "conv"), (32, "resnet")])
def test_auto_picks_conv_or_resnet_for_images_never_an_mlp(tmp_path, size, kind):
    arr = np.random.default_rng(0).integers(0, 256, (6, size, size), dtype=np.uint8)
    np.save(tmp_path / "a.npy", arr)
    t = WGANGPTrainer(small("images", data_path=str(tmp_path / "a.npy"), resnet_width=4,
                            feature_maps=4))
    assert t.model_kind == kind


def test_auto_refuses_images_it_has_no_model_for(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((3, 28, 28), np.uint8) + np.arange(28, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"auto.*got 28x28: pass --image-size"):
        WGANGPTrainer(small("images", data_path=str(tmp_path / "a.npy")))
    assert WGANGPTrainer(small("images", data_path=str(tmp_path / "a.npy"), image_size=16,
                               feature_maps=4)).model_kind == "conv"
    # the digits preset keeps its measured MLP pair
    assert WGANGPTrainer(small()).model_kind == "mlp"


def test_resnet_runs_and_its_settings(pets, tmp_path):
    cfg = dict(data_path=str(pets), image_cache=str(tmp_path / "cache"), model="resnet",
               resnet_width=4, critic_norm="layer")
    t = WGANGPTrainer(small("images", **cfg))
    assert isinstance(t.critic, ResNetCritic) and t.critic.width == 4
    t.train()
    assert all(np.isfinite(v) for v in t.history["gp"])
    with pytest.raises(ValueError, match="critic_norm .* is the resnet critic's"):
        WGANGPTrainer(small("images", **{**cfg, "model": "conv"}))
    with pytest.raises(ValueError, match="method 'sn' .* not 'resnet'"):
        WGANGPTrainer(small("images", **cfg, method="sn"))
