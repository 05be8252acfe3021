"""Datasets of wgangp_fast.train.data: the synthetic mixtures, the bundled digits, local image arrays,
CSV tables, and the checkpointable batch sampler. Bad files give errors that name the
path and the problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wgangp_fast.train import data


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name,n_modes,std", [("ring8", 8, 0.02), ("grid25", 25, 0.05)])
def test_mixtures_match_their_definition(name, n_modes, std):
    ds = data.load_dataset(name)
    assert ds.centers.shape == (n_modes, 2) and ds.std == std
    x = ds.sample(20000, _gen()).numpy().astype(np.float64)
    d = np.sqrt(((x[:, None] - ds.centers[None]) ** 2).sum(-1))
    nearest = d.argmin(1)
    resid = x - ds.centers[nearest]
    assert resid.std() == pytest.approx(std, rel=0.05)
    counts = np.bincount(nearest, minlength=n_modes)
    assert counts.min() > 0.7 * len(x) / n_modes


def test_mixture_geometry():
    ring = data.ring8()
    assert np.allclose(np.linalg.norm(ring.centers, axis=1), 2.0)
    grid = data.grid25()
    assert sorted(set(grid.centers[:, 0].round(6))) == [-4, -2, 0, 2, 4]


def test_swissroll_is_a_spiral():
    x = data.SwissRollDataset(noise=0.0).sample(2000, _gen()).numpy()
    r = np.linalg.norm(x, axis=1) * 7.5
    assert r.min() >= 1.5 * np.pi - 1e-3 and r.max() <= 4.5 * np.pi + 1e-3
    assert data.SwissRollDataset().sample(5, _gen()).shape == (5, 2)


def test_digits_scaled_and_decoded():
    ds = data.load_digits()
    assert ds.data.shape == (1797, 1, 8, 8) and ds.kind == "image"
    assert ds.data.min() == -1.0 and ds.data.max() == 1.0
    assert np.allclose(ds.decode(ds.data[:10].numpy()), _sk_digits()[:10].reshape(10, 1, 8, 8))
    big = data.load_digits(image_size=32)
    assert big.data.shape == (1797, 1, 32, 32) and big.data.abs().max() <= 1.0


def _sk_digits():
    from sklearn.datasets import load_digits

    return load_digits().images


def test_npy_uint8_channels_last(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, size=(5, 6, 6, 3), dtype=np.uint8)
    arr[0, 0, 0, 0], arr[0, 0, 0, 1] = 0, 255
    path = tmp_path / "imgs.npy"
    np.save(path, arr)
    ds = data.load_image_array(str(path))
    assert ds.data.shape == (5, 3, 6, 6)
    assert ds.data.min() >= -1 and ds.data.max() <= 1
    assert np.allclose(ds.decode(ds.data.numpy()), arr.transpose(0, 3, 1, 2), atol=1e-3)


def test_npz_needs_a_key_when_ambiguous(tmp_path):
    path = tmp_path / "two.npz"
    np.savez(path, a=np.zeros((2, 4, 4)), b=np.linspace(0, 1, 32).reshape(2, 4, 4))
    with pytest.raises(ValueError, match="several arrays"):
        data.load_image_array(str(path))
    ds = data.load_image_array(str(path), key="b")
    assert ds.data.shape == (2, 1, 4, 4)
    assert ds.low == 0.0 and ds.high == 1.0
    with pytest.raises(ValueError, match="no array named 'c'"):
        data.load_image_array(str(path), key="c")
    resized = data.load_image_array(str(path), key="b", image_size=8)
    assert resized.data.shape == (2, 1, 8, 8)


def test_an_npz_key_with_a_npy_file_or_other_data_is_refused(tmp_path):
    # A .npy holds one unnamed array: a key asked for an array of a .npz, and reading the file
    # anyway would train on whatever it holds.
    path = tmp_path / "imgs.npy"
    np.save(path, np.linspace(0, 1, 32).reshape(2, 4, 4))
    with pytest.raises(ValueError) as info:
        data.load_image_array(str(path), key="b")
    message = str(info.value)
    for word in (str(path), "a .npy file", "key 'b' (--npz-key)", "drop --npz-key"):
        assert word in message, f"{word!r} not in {message!r}"
    with pytest.raises(ValueError, match="imgs.npy.*--npz-key"):
        data.load_dataset("images", str(path), npz_key="b")
    with pytest.raises(ValueError, match=r"--npz-key .* dataset 'ring8'"):
        data.load_dataset("ring8", npz_key="b")
    assert data.load_dataset("images", str(path)).data.shape == (2, 1, 4, 4)


def test_bad_image_files_name_the_path(tmp_path):
    missing = tmp_path / "nope.npy"
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        data.load_image_array(str(missing))
    garbage = tmp_path / "garbage.npy"
    garbage.write_text("not an array")
    with pytest.raises(ValueError, match="garbage.npy.*cannot read"):
        data.load_image_array(str(garbage))
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros((4, 5)))
    with pytest.raises(ValueError, match=r"flat.npy.*\[N, H, W\]"):
        data.load_image_array(str(flat))
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((2, 4, 4), np.nan))
    with pytest.raises(ValueError, match="NaN"):
        data.load_image_array(str(nan))


@pytest.mark.parametrize("shape, words", [
    ((10, 5, 8, 8), ["[10, 5, 8, 8]", "axis 1", "axis 3", "moveaxis"]),
    ((10, 8, 8, 2), ["[10, 8, 8, 2]", "channels (1, 3 or 4)"]),
    ((8, 8, 3), ["[8, 8, 3]", "8 grayscale images of 8x3", "[1, H, W, C]"]),
])
def test_image_arrays_in_a_layout_that_is_not_images_are_refused(tmp_path, shape, words):
    path = tmp_path / "layout.npy"
    np.save(path, np.random.default_rng(0).random(shape, dtype=np.float32))
    with pytest.raises(ValueError) as info:
        data.load_image_array(str(path))
    for word in ("layout.npy",) + tuple(words):
        assert word in str(info.value), f"{word!r} not in {str(info.value)!r}"


@pytest.mark.parametrize("shape, expected", [
    ((4, 3, 3), (4, 1, 3, 3)),          # [N, H, W] with 3x3 images: square, so not channels
    ((4, 1, 8, 8), (4, 1, 8, 8)),
    ((4, 8, 8, 1), (4, 1, 8, 8)),
    ((1, 8, 8, 3), (1, 3, 8, 8)),
])
def test_image_layouts_that_are_images_still_load(tmp_path, shape, expected):
    path = tmp_path / "ok.npy"
    np.save(path, np.random.default_rng(0).random(shape, dtype=np.float32))
    assert data.load_image_array(str(path)).data.shape == expected


# MNIST, Fashion-MNIST and CIFAR-10 copies, and folders of images: test_image_folders.py


CSV = """age,city,income,member
31,Paris,1200.5,yes
45,Lyon,2300.0,no
28,Paris,1800.25,yes
52,Nice,3100.75,no
"""


def test_csv_round_trip(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(CSV)
    ds = data.load_tabular_csv(str(path), transform="standard")
    assert ds.columns == ["age", "city", "income", "member"]
    assert ds.categories == {"city": ["Lyon", "Nice", "Paris"], "member": ["no", "yes"]}
    assert ds.data.shape == (4, 1 + 3 + 1 + 2)
    assert ds.numeric["age"].integer is True and ds.numeric["income"].integer is False
    assert np.allclose(ds.data[:, 0].mean(), 0, atol=1e-6)
    assert ds.categorical_spans == [(1, 4), (5, 7)] and ds.tanh_columns == []
    rows = ds.decode_rows(ds.data.numpy())
    assert rows[0] == [31, "Paris", pytest.approx(1200.5, abs=1e-3), "yes"]
    assert rows[3][1:] == ["Nice", pytest.approx(3100.75, abs=1e-3), "no"]
    out = tmp_path / "back.csv"
    ds.write_csv(ds.data.numpy(), str(out))
    assert out.read_text().splitlines()[0] == "age,city,income,member"


def test_csv_forced_categorical(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("code,v\n1,0.5\n2,0.7\n1,0.1\n")
    ds = data.load_tabular_csv(str(path), categorical=["code"])
    assert ds.categories == {"code": ["1", "2"]}
    with pytest.raises(ValueError, match="not in the header"):
        data.load_tabular_csv(str(path), categorical=["nope"])


@pytest.mark.parametrize("text,match", [
    ("a,b\n1,2\n3\n", "line 3 has 1 fields"),
    ("a,b\n1,x\n,y\n", "numeric column 'a' has an empty cell on line 3"),
    ("a,b\n", "at least one data row"),
    ("a,a\n1,2\n", "name every column once"),
])
def test_bad_csv_files(tmp_path, text, match):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as info:
        data.load_tabular_csv(str(path))
    assert "bad.csv" in str(info.value)


@pytest.mark.parametrize("cell", ["nan", "NaN", "inf", "-inf", "Infinity"])
def test_csv_numeric_column_with_a_non_finite_value_is_refused_not_re_typed(tmp_path, cell):
    path = tmp_path / "t.csv"
    path.write_text(f"a,b\n1.5,x\n2.5,y\n{cell},x\n3,y\n4,x\n")
    with pytest.raises(ValueError) as info:
        data.load_tabular_csv(str(path))
    message = str(info.value)
    for word in ("t.csv", "numeric column 'a'", f"holds {cell!r} on line 4",
                 "1 non-finite value in all", "--categorical a"):
        assert word in message, f"{word!r} not in {message!r}"
    # asked for explicitly, the column is categorical, the non-finite text one category of it
    ds = data.load_tabular_csv(str(path), categorical=["a"])
    assert cell in ds.categories["a"] and "a" not in ds.numeric


def test_csv_counts_every_non_finite_value(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a\n1\ninf\n2\nnan\n")
    with pytest.raises(ValueError, match="holds 'inf' on line 3 \\(2 non-finite values in all\\)"):
        data.load_tabular_csv(str(path))


def test_csv_with_a_single_data_row_is_refused(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("a,b\n1.5,x\n")
    with pytest.raises(ValueError, match="one.csv: the table has a single data row.*at least 2"):
        data.load_tabular_csv(str(path))
    path.write_text("a,b\n1.5,x\n2.5,y\n")
    assert data.load_tabular_csv(str(path), transform="standard").data.shape == (2, 3)
    # mode-specific: a (alpha, one-hot mode) pair per numeric column, one mode per distinct value
    assert data.load_tabular_csv(str(path)).data.shape == (2, 1 + 2 + 2)


def test_csv_missing_and_too_many_categories(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        data.load_dataset("csv", str(tmp_path / "missing.csv"))
    path = tmp_path / "ids.csv"
    path.write_text("id\n" + "\n".join(f"u{i}" for i in range(60)) + "\n")
    with pytest.raises(ValueError, match="60 distinct non-numeric"):
        data.load_tabular_csv(str(path))


def test_load_dataset_arguments():
    with pytest.raises(ValueError, match="dataset must be one of"):
        data.load_dataset("cifar")
    with pytest.raises(ValueError, match="needs a path"):
        data.load_dataset("images")


def test_sampler_state_resumes_the_stream():
    ds = data.load_digits()
    a = data.BatchSampler(ds, 16, seed=3)
    a.next()
    state = a.state_dict()
    expected = [a.next() for _ in range(3)]
    b = data.BatchSampler(ds, 16, seed=99)
    b.load_state_dict(state)
    for e in expected:
        assert torch.equal(b.next(), e)
    assert not torch.equal(data.BatchSampler(ds, 16, seed=4).next(),
                           data.BatchSampler(ds, 16, seed=3).next())
