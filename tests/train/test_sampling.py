"""`wgangp-fast sample` and wgangp_fast.train.sample: N samples of a trained run in the data's
own units and format (points .npy, images uint8 .npy / a grid / a folder of PNGs, tables CSV
with their columns' names and types), from the checkpoint alone, seeded, batched, EMA or not."""

from __future__ import annotations

import csv
import os
import shutil

import matplotlib.image
import numpy as np
import pytest
import torch

from wgangp_fast import cli
from wgangp_fast.train import WGANGPConfig, WGANGPTrainer, sample

pytestmark = pytest.mark.usefixtures("one_thread")

TABLE = "income,rooms,city\n" + "".join(
    f"{np.exp(9 + (i % 11) * 0.15):.2f},{1 + i % 4},{'xyz'[i % 3]}\n" for i in range(80))


def _run(tmp_path, dataset, **kw):
    settings = dict(steps=3, batch_size=16, hidden_dim=8, latent_dim=4, n_critic=1,
                    device="cpu", n_eval_samples=200, out_dir=str(tmp_path / dataset))
    if dataset == "csv":
        (tmp_path / "table.csv").write_text(TABLE)
        settings.update(batch_size=20, pac=5, data_path=str(tmp_path / "table.csv"))
    settings.update(kw)
    t = WGANGPTrainer(WGANGPConfig.for_dataset(dataset, **settings))
    t.train()
    return t, tmp_path / dataset


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("runs")
    yield {name: _run(root, name)[1] for name in ("ring8", "digits", "csv")}
    torch.set_num_threads(before)


def test_points_npy_seeded_batched_and_the_same_as_the_python_call(runs, tmp_path, capsys):
    out = tmp_path / "ring8.npy"
    assert cli.main(["sample", str(runs["ring8"]), "-n", "3000", "--out", str(out),
                     "--batch", "700"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 3000 samples" in printed and "averaged (EMA) weights" in printed
    x = np.load(out)
    assert x.shape == (3000, 2) and x.dtype == np.float32 and np.isfinite(x).all()
    same = sample(str(runs["ring8"]), 3000, batch_size=64)  # another batch size
    assert np.array_equal(same, x)
    # the first N of a seed are the same whatever N; another seed, other samples
    assert np.array_equal(sample(str(runs["ring8"]), 10), x[:10])
    assert not np.array_equal(sample(str(runs["ring8"]), 10, seed=1), x[:10])
    # the trained weights, not the average (ring8 keeps an EMA)
    raw = sample(str(runs["ring8"]), 10, ema=False)
    assert not np.allclose(raw, x[:10])
    trainer = WGANGPTrainer.from_checkpoint(str(runs["ring8"] / "checkpoint.pt"))
    z = torch.Generator().manual_seed(0)
    expected = trainer.generate_samples(noise=torch.randn(1024, 4, generator=z)[:10])
    assert np.allclose(x[:10], expected.numpy())


def test_sampling_leaves_the_global_random_stream_alone(runs):
    before = torch.get_rng_state()
    sample(str(runs["csv"]), 5)
    assert torch.equal(torch.get_rng_state(), before)


def test_points_as_a_picture(runs, tmp_path):
    out = tmp_path / "cloud.png"
    assert sample(str(runs["ring8"]), 500, str(out)) == str(out)
    assert matplotlib.image.imread(out).ndim == 3


def test_images_as_uint8_npy_one_grid_or_a_folder_of_pngs(runs, tmp_path):
    run = str(runs["digits"])
    npy = np.load(sample(run, 20, str(tmp_path / "d.npy")))
    assert npy.shape == (20, 8, 8, 1) and npy.dtype == np.uint8
    assert npy.max() > npy.min()
    grid = matplotlib.image.imread(sample(run, 16, str(tmp_path / "d.png")))
    # 8 to a row, 2-pixel gaps, enlarged 4 times (82 pixels wide -> at least 256)
    assert grid.shape[:2] == (4 * 22, 4 * 82)
    folder = sample(run, 12, str(tmp_path / "digits"))
    files = sorted(os.listdir(folder))
    assert files == [f"{i:06d}.png" for i in range(12)]
    first = matplotlib.image.imread(os.path.join(folder, files[0]))
    assert first.shape[:2] == (8, 8)
    # the same pixels as the .npy (a grayscale PNG read back as RGBA or gray)
    pixels = first[..., 0] if first.ndim == 3 else first
    assert np.allclose(pixels * 255, npy[0, ..., 0], atol=1)
    assert cli.main(["sample", run, "-n", "20", "--out", str(tmp_path / "x"), "--format",
                     "npy"]) == 0
    assert np.array_equal(np.load(tmp_path / "x"), npy)


def test_a_table_as_csv_without_its_data_file(runs, tmp_path):
    run = tmp_path / "moved"
    shutil.copytree(runs["csv"], run)
    data = WGANGPTrainer.read_checkpoint(str(run / "checkpoint.pt"))["config"]["data_path"]
    os.rename(data, data + ".away")  # the run's CSV is gone: the checkpoint is enough
    try:
        out = tmp_path / "synthetic.csv"
        assert cli.main(["sample", str(run), "-n", "2500", "--out", str(out), "--batch",
                         "1000", "--seed", "3"]) == 0
        with open(out, newline="") as f:
            rows = list(csv.reader(f))
        assert rows[0] == ["income", "rooms", "city"]
        assert len(rows) == 2501
        income = np.array([float(r[0]) for r in rows[1:]])
        rooms = [r[1] for r in rows[1:]]
        assert income.min() > 0  # a positive column stays positive
        assert all(r.isdigit() and 1 <= int(r) <= 4 for r in rooms)  # integers, in range
        assert {r[2] for r in rows[1:]} <= {"x", "y", "z"}
        columns = sample(str(run), 40, seed=3)
        assert list(columns) == ["income", "rooms", "city"]
        assert len(columns["city"]) == 40 and columns["income"].dtype == np.float64
    finally:
        os.rename(data + ".away", data)


def test_a_checkpoint_file_works_as_well_as_its_folder(runs):
    folder = sample(str(runs["ring8"]), 7)
    file = sample(str(runs["ring8"] / "checkpoint.pt"), 7)
    assert np.array_equal(folder, file)


@pytest.mark.parametrize("argv, match", [
    (["{ring8}", "-n", "5", "--out", "{tmp}/x.csv"],
     "points samples are written as .npy or .png (--format npy / grid), not csv"),
    (["{csv}", "-n", "5", "--out", "{tmp}/x.npy"], "tabular samples are written as .csv or .png"),
    (["{ring8}", "-n", "5", "--out", "{tmp}/x.txt"], "cannot tell the format from the suffix"),
    (["{digits}", "-n", "5000", "--out", "{tmp}/x.png"], "a grid of 5000 images is too large"),
    (["{tmp}/nothing", "-n", "5", "--out", "{tmp}/x.npy"], "no run folder or checkpoint at"),
    (["{tmp}", "-n", "5", "--out", "{tmp}/x.npy"], "a folder without a checkpoint.pt"),
])
def test_bad_sample_arguments_are_one_line_errors(runs, tmp_path, capsys, argv, match):
    names = {"{ring8}": str(runs["ring8"]), "{csv}": str(runs["csv"]),
             "{digits}": str(runs["digits"]), "{tmp}": str(tmp_path)}
    for key, value in names.items():
        argv = [a.replace(key, value) for a in argv]
    assert cli.main(["sample", *argv]) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.npy").exists() and not (tmp_path / "x.png").exists()


def test_sample_count_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        cli.main(["sample", "run", "-n", "0", "--out", "x.npy"])
    assert "-n: expected a positive integer" in capsys.readouterr().err


def _conditional_digits(tmp_path):
    t, folder = _run(tmp_path, "digits", conditional=True, model="conv", image_size=16,
                     feature_maps=8, fid_samples=0)
    assert t.class_names == [str(k) for k in range(10)]
    return t, folder


def test_a_conditional_run_samples_one_class_or_the_data_frequencies(tmp_path, capsys):
    t, folder = _conditional_digits(tmp_path)
    # one class on request: the same images as the trainer's own call for that class
    seven = sample(str(folder), 12, seed=3, label="7")
    again = sample(str(folder), 12, seed=3, label=7)
    np.testing.assert_array_equal(seven, again)
    z = torch.randn(1024, t.config.latent_dim, generator=torch.Generator().manual_seed(3))[:12]
    want = t.generate_samples(noise=z, labels=7).numpy()
    want = np.rint((np.clip(want, -1, 1) + 1) * 127.5).astype(np.uint8).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(seven, want)
    # without a label: classes drawn at the data's frequencies, and returned / written with them
    got = sample(str(folder), 400, seed=1)
    assert got["samples"].shape == (400, 16, 16, 1)
    counts = {c: got["classes"].count(c) for c in t.class_names}
    assert all(20 <= v <= 65 for v in counts.values()), counts  # about 40 each
    out = tmp_path / "d.npy"
    assert cli.main(["sample", str(folder), "-n", "400", "--seed", "1", "--out", str(out)]) == 0
    assert "their classes in" in capsys.readouterr().out
    labels = np.load(tmp_path / "d_labels.npy")
    assert [t.class_names[k] for k in labels] == got["classes"]
    np.testing.assert_array_equal(np.load(out), got["samples"])
    # a folder of PNG files in the layout --images reads back as classes
    pngs = tmp_path / "pngs"
    assert cli.main(["sample", str(folder), "-n", "30", "--out", str(pngs)]) == 0
    assert set(os.listdir(pngs)) <= set(t.class_names) and len(os.listdir(pngs)) >= 5
    assert sum(len(os.listdir(pngs / c)) for c in os.listdir(pngs)) == 30


def test_a_conditional_run_refuses_an_unknown_class_and_a_plain_run_any(runs, tmp_path, capsys):
    _, folder = _conditional_digits(tmp_path)
    assert cli.main(["sample", str(folder), "-n", "4", "--out", str(tmp_path / "x.npy"),
                     "--label", "12"]) == 2
    assert "label (--label) 12: class index 12 is outside 0..9" in capsys.readouterr().err
    assert cli.main(["sample", str(folder), "-n", "4", "--out", str(tmp_path / "x.npy"),
                     "--label", "cat"]) == 2
    assert "no class named 'cat'" in capsys.readouterr().err
    assert cli.main(["sample", str(runs["digits"]), "-n", "4", "--out",
                     str(tmp_path / "y.npy"), "--label", "3"]) == 2
    assert "is not conditional" in capsys.readouterr().err


def test_a_conditional_table_is_written_with_each_rows_class(tmp_path):
    # the class column of a CSV table, drawn at the data's frequencies: each written row carries
    # the class its batch was generated for (several batches, so a misaligned batch would show)
    rows = ["x,kind,y"] + [f"{i % 7 + (3 if i % 3 == 0 else 0)},{'ab'[i % 3 == 0]},{i % 5}"
                           for i in range(60)]
    (tmp_path / "kinds.csv").write_text("\n".join(rows) + "\n")
    t, folder = _run(tmp_path, "csv", label_column="kind", conditional=True, batch_size=20, pac=5,
                     data_path=str(tmp_path / "kinds.csv"))
    want = sample(str(folder), 50, seed=2, batch_size=16)
    out = tmp_path / "synthetic.csv"
    assert cli.main(["sample", str(folder), "-n", "50", "--seed", "2", "--batch", "16",
                     "--out", str(out)]) == 0
    with open(out, newline="") as f:
        written = list(csv.reader(f))
    assert written[0] == ["x", "y", "kind"] and len(written) == 51
    assert [r[2] for r in written[1:]] == want["classes"]
    assert {"a", "b"} == set(want["classes"])
    assert [int(r[1]) for r in written[1:]] == [int(v) for v in want["samples"]["y"]]
