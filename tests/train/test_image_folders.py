"""Folders of image files (--images DIR): layouts, labels, the uint8 cache, conversions, and every
refusal (empty folder, corrupt file, decompression bomb, a crafted CIFAR-10 pickle), each one
line naming the file."""

from __future__ import annotations

import io
import os
import pickle
import struct
import sys
import zlib

import numpy as np
import pytest
import torch

from wgangp_fast.train import data
from wgangp_fast.train.data import cache as cache_mod
from wgangp_fast.train.data import folders, standard

from ..files import RunsCode

PIL = pytest.importorskip("PIL.Image")
pytest.importorskip("torchvision")


def _rgb(seed, h=12, w=12):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _smooth(seed, h=12, w=12):
    """A smooth colour image (what JPEG keeps well): gradients with a random slope per channel."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    chans = [rng.uniform(40, 200) + rng.uniform(-50, 50) * xx + rng.uniform(-50, 50) * yy
             for _ in range(3)]
    return np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8)


def _save(path, arr, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.fromarray(arr).save(path, **kw)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))


def _bomb_png(path, side):
    """A real decompression bomb: a grey PNG of side x side zeros, a few hundred kB."""
    comp = zlib.compressobj(9)
    row = b"\0" * (side + 1)  # filter byte + pixels
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
                     + _png_chunk(b"IEND", b""))


@pytest.fixture
def folder(tmp_path):
    """Class subfolders: cats (PNG and JPEG, RGB) and dogs (PNG, one grey-scale), plus a text
    file that is not an image."""
    root = tmp_path / "pets"
    _save(root / "cats" / "a.png", _rgb(0))
    _save(root / "cats" / "b.jpg", _smooth(1), quality=95)
    _save(root / "cats" / "deeper" / "c.png", _rgb(2))
    _save(root / "dogs" / "d.png", _rgb(3))
    _save(root / "dogs" / "grey.png", _rgb(4)[:, :, 0])
    (root / "dogs" / "notes.txt").write_text("not an image")
    return root


def _load(root, tmp_path, **kw):
    kw.setdefault("cache_dir", str(tmp_path / "cache"))
    return data.load_image_folder(str(root), **kw)


def test_class_subfolders_png_jpeg_and_grey_among_rgb(folder, tmp_path):
    ds = _load(folder, tmp_path)
    assert isinstance(ds, data.UInt8ImageDataset) and isinstance(ds.pixels, np.memmap)
    assert ds.shape == (3, 12, 12) and len(ds) == 5
    assert ds.class_names == ["cats", "dogs"]
    assert ds.labels.tolist() == [0, 0, 0, 1, 1]  # cats/a, cats/b, cats/deeper/c, dogs/...
    # PNG pixels exact; the JPEG close to its source; the grey file repeated to three channels
    assert np.array_equal(ds.pixels[0], _rgb(0).transpose(2, 0, 1))
    assert np.abs(ds.pixels[1].astype(int) - _smooth(1).transpose(2, 0, 1)).mean() < 4
    grey = ds.pixels[4]
    assert np.array_equal(grey[0], _rgb(4)[:, :, 0]) and (grey == grey[:1]).all()
    notes = ds.notes
    assert any("converted 1 grey-scale image of 5 to RGB (e.g. dogs/grey.png)" in n
               for n in notes), notes
    assert any("ignored 1 file without an image extension" in n for n in notes), notes
    assert all("\n" not in n for n in notes)
    # model space: [-1, 1], drawn with the labels of the same rows
    x, y = ds.sample_labelled(64, torch.Generator().manual_seed(0))
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    for xi, yi in zip(x, y):
        row = next(i for i in range(5) if np.array_equal(
            ((xi.numpy() + 1) * 127.5).round().astype(np.uint8), ds.pixels[i]))
        assert ds.labels[row] == yi


def test_all_grey_folder_stays_one_channel_and_no_note(tmp_path):
    root = tmp_path / "grey"
    for k in range(3):
        _save(root / f"{k}.png", _rgb(k)[:, :, 0])
    _save(root / "j.jpg", _rgb(9)[:, :, 0], quality=95)
    ds = _load(root, tmp_path)
    assert ds.shape == (1, 12, 12) and ds.labels is None and ds.class_names is None
    assert not any("converted" in n for n in ds.notes)


def test_resize_and_centre_crop_through_torchvision(tmp_path):
    root = tmp_path / "sizes"
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, 10:30] = 255  # a white centre band as wide as the crop
    _save(root / "wide.png", wide)
    _save(root / "small.png", _rgb(1, 8, 8))
    with pytest.raises(ValueError) as info:
        _load(root, tmp_path)
    msg = str(info.value)
    assert "different sizes" in msg and "--image-size" in msg and "\n" not in msg
    ds = _load(root, tmp_path, image_size=10)
    assert ds.shape == (3, 10, 10)
    # 40x20 -> 20x10 (shorter side 10), centre 10x10 crop: the white band
    assert ds.pixels[1].min() > 200


def test_empty_folder_and_empty_class_folder_are_one_line_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError) as info:
        _load(empty, tmp_path)
    assert "holds no image files" in str(info.value) and "\n" not in str(info.value)
    (empty / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match=r"no image files .*only 1 other files"):
        _load(empty, tmp_path)
    classes = tmp_path / "classes"
    _save(classes / "a" / "1.png", _rgb(0))
    (classes / "b").mkdir()
    with pytest.raises(ValueError) as info:
        _load(classes, tmp_path)
    assert f"{classes / 'b'}: this class folder holds no image files" in str(info.value)
    with pytest.raises(FileNotFoundError, match="no such folder or file"):
        data.load_dataset("images", str(tmp_path / "missing"))


def test_corrupt_files_are_named_before_training(folder, tmp_path):
    bad = folder / "dogs" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    with pytest.raises(folders.ImageFileError) as info:
        _load(folder, tmp_path)
    assert str(info.value).startswith(f"{bad}:") and "\n" not in str(info.value)
    # a valid header over truncated pixel data: found when decoding, named too
    png = io.BytesIO()
    PIL.fromarray(_rgb(5)).save(png, format="PNG")
    bad.write_bytes(png.getvalue()[:60])
    with pytest.raises(folders.ImageFileError) as info:
        _load(folder, tmp_path)
    assert str(info.value).startswith(f"{bad}: cannot be decoded")
    assert "\n" not in str(info.value)
    bad.write_bytes(b"")
    with pytest.raises(folders.ImageFileError, match="the file is empty"):
        _load(folder, tmp_path)
    bad.write_bytes(b"neither PNG nor anything Pillow knows")
    with pytest.raises(folders.ImageFileError, match=f"{bad}: cannot be read as an image"):
        _load(folder, tmp_path)
    # nothing half-written is left in the cache
    assert not [f for f in os.listdir(tmp_path / "cache") if ".tmp" in f]


def test_decompression_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    root = tmp_path / "bomb"
    _save(root / "fine.png", _rgb(0))
    bomb = root / "bomb.png"
    _bomb_png(bomb, 12_000)  # 144 million pixels claimed, about 140 kB on disk
    assert bomb.stat().st_size < 1_000_000

    def never(*args, **kwargs):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(folders, "decode_file", never)
    monkeypatch.setattr(cache_mod, "decode_file", never)
    with pytest.raises(folders.ImageFileError) as info:
        _load(root, tmp_path)
    msg = str(info.value)
    assert msg.startswith(f"{bomb}: its header claims 12000x12000 = 144000000 pixels")
    assert "limit of 100000000 (--max-image-pixels)" in msg and "\n" not in msg
    # the limit is a setting: a low one refuses an ordinary image, naming it
    bomb.unlink()
    with pytest.raises(folders.ImageFileError, match=r"fine.png: .* limit of 100 "):
        _load(root, tmp_path, max_pixels=100)
    # formats read through Pillow are checked too: BMP headers claiming 11000x11000 (above this
    # limit) and 20000x20000 (above Pillow's own, which refuses it at its header too)
    for side, words in ((11000, "its header claims 11000x11000"),
                        (20000, "refused before decoding")):
        bmp = root / "huge.bmp"
        bmp.write_bytes(b"BM" + struct.pack("<IHHI", 54, 0, 0, 54)
                        + struct.pack("<IiiHHIIiiII", 40, side, side, 1, 24, 0, 0, 0, 0, 0, 0))
        with pytest.raises(folders.ImageFileError) as info:
            _load(root, tmp_path)
        assert str(info.value).startswith(f"{bmp}: ") and words in str(info.value)
        assert "--max-image-pixels" in str(info.value) and "\n" not in str(info.value)


def test_a_single_image_file_is_not_an_array(tmp_path):
    png = tmp_path / "one.png"
    _save(png, _rgb(0))
    with pytest.raises(ValueError, match="one image file; --images takes a folder"):
        data.load_dataset("images", str(png))


def test_the_cache_is_reused_and_invalidated_by_changes(folder, tmp_path, monkeypatch):
    first = _load(folder, tmp_path, image_size=8)
    stems = sorted(f for f in os.listdir(tmp_path / "cache") if f.endswith(".json"))
    assert len(stems) == 1
    calls = []
    real_decode = cache_mod.decode_file
    monkeypatch.setattr(cache_mod, "decode_file",
                        lambda *a: calls.append(a[0]) or real_decode(*a))
    again = _load(folder, tmp_path, image_size=8)
    assert calls == [] and np.array_equal(np.asarray(again.pixels), np.asarray(first.pixels))
    assert again.notes == first.notes  # the conversion is still said on every run
    # a replaced file (new size and time) gives a new key; the old cache of this folder goes
    _save(folder / "cats" / "a.png", _rgb(7))
    os.utime(folder / "cats" / "a.png", ns=(1, 1))
    changed = _load(folder, tmp_path, image_size=8)
    assert len(calls) == 5
    assert not np.array_equal(np.asarray(changed.pixels[0]), np.asarray(first.pixels[0]))
    assert sorted(f for f in os.listdir(tmp_path / "cache") if f.endswith(".json")) != stems
    assert len([f for f in os.listdir(tmp_path / "cache") if f.endswith(".json")]) == 1
    # another side is another cache, beside it
    _load(folder, tmp_path, image_size=4)
    assert len([f for f in os.listdir(tmp_path / "cache") if f.endswith(".json")]) == 2


def test_one_and_two_decoding_threads_write_the_same_cache(folder, tmp_path):
    one = _load(folder, tmp_path, cache_dir=str(tmp_path / "c1"), workers=1)
    two = _load(folder, tmp_path, cache_dir=str(tmp_path / "c2"), workers=2)
    assert np.array_equal(np.asarray(one.pixels), np.asarray(two.pixels))


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("WGANGP_FAST_CACHE", str(tmp_path / "c"))
    assert data.default_cache_dir() == str(tmp_path / "c" / "images")
    monkeypatch.delenv("WGANGP_FAST_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert data.default_cache_dir() == str(tmp_path / "x" / "wgangp_fast" / "images")


def test_the_sampler_is_seeded_and_resumes_on_a_memory_map(folder, tmp_path):
    ds = _load(folder, tmp_path)
    a = data.BatchSampler(ds, 4, seed=3)
    a.next_labelled()
    state = a.state_dict()
    expected = [a.next_labelled() for _ in range(3)] + [a.next_labels()]
    b = data.BatchSampler(ds, 4, seed=99)
    b.load_state_dict(state)
    got = [b.next_labelled() for _ in range(3)] + [b.next_labels()]
    for e, g in zip(expected[:3], got[:3]):
        assert torch.equal(e[0], g[0]) and torch.equal(e[1], g[1])
    assert torch.equal(expected[3], got[3])


def test_without_torchvision_a_folder_names_the_extra(folder, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(ImportError) as info:
        _load(folder, tmp_path)
    assert "pip install 'wgangp_fast[images]'" in str(info.value)
    assert "\n" not in str(info.value)


# -- MNIST, Fashion-MNIST, CIFAR-10 ---------------------------------------------------------

def _idx(path, arr, magic):
    path.parent.mkdir(parents=True, exist_ok=True)
    dims = struct.pack(">" + "I" * arr.ndim, *arr.shape)
    path.write_bytes(struct.pack(">I", magic) + dims + arr.astype(np.uint8).tobytes())


@pytest.mark.parametrize("kind,sub", [("mnist", ""), ("mnist", "MNIST/raw"),
                                      ("fashion-mnist", "FashionMNIST/raw")])
def test_mnist_copies_through_torchvision(tmp_path, kind, sub):
    imgs = np.random.default_rng(1).integers(0, 256, size=(7, 28, 28))
    labels = np.arange(7) % 10
    folder = tmp_path / sub if sub else tmp_path
    _idx(folder / "train-images-idx3-ubyte", imgs, 2051)
    _idx(folder / "train-labels-idx1-ubyte", labels, 2049)
    ds = data.load_dataset(kind, str(tmp_path))
    assert ds.shape == (1, 28, 28) and np.array_equal(ds.pixels[:, 0], imgs)
    assert ds.labels.tolist() == labels.tolist() and len(ds.class_names) == 10
    assert data.load_dataset(kind, str(tmp_path), image_size=32).shape == (1, 32, 32)


def test_bad_mnist_copies(tmp_path):
    with pytest.raises(FileNotFoundError, match="no mnist training files"):
        data.load_mnist(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="mnist folder not found"):
        data.load_mnist(str(tmp_path / "missing"))
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="gunzip the .gz files there first"):
        data.load_mnist(str(tmp_path))
    _idx(tmp_path / "train-images-idx3-ubyte", np.zeros(4), 2049)  # a labels file's magic
    _idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4), 2049)
    with pytest.raises(ValueError, match="cannot read the mnist IDX files"):
        data.load_mnist(str(tmp_path))


def _cifar_arrays(n=6):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), [int(k) for k in np.arange(n) % 10]


def test_cifar10_binary_version(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    pixels, labels = _cifar_arrays()
    for i in range(1, 6):
        records = np.concatenate([np.asarray(labels, np.uint8)[:, None], pixels], 1)
        (folder / f"data_batch_{i}.bin").write_bytes(records.tobytes())
    ds = data.load_dataset("cifar10", str(tmp_path))
    assert ds.shape == (3, 32, 32) and len(ds) == 30
    assert np.array_equal(ds.pixels[:6].reshape(6, -1), pixels)
    assert ds.labels[:6].tolist() == labels and ds.class_names[3] == "cat"
    (folder / "data_batch_5.bin").write_bytes(b"\0" * 100)
    with pytest.raises(ValueError, match="data_batch_5.bin: 100 bytes, not a whole number"):
        data.load_cifar10(str(tmp_path))


def test_cifar10_python_version_through_the_arrays_only_unpickler(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    pixels, labels = _cifar_arrays()
    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({"data": pixels, "labels": labels, "batch_label": "b",
                         "filenames": [b"x.png"] * 6}, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{k}" for k in range(10)], "num_vis": 3072}, f)
    ds = data.load_cifar10(str(tmp_path))
    assert len(ds) == 30 and np.array_equal(ds.pixels[:6].reshape(6, -1), pixels)
    assert ds.class_names[0] == "c0"


def test_a_crafted_cifar10_pickle_is_refused_without_running(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "pwned"
    pixels, labels = _cifar_arrays()
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({"data": RunsCode(marker), "labels": labels}, f, protocol=2)
    # the pickle really runs code under a plain pickle.load (torchvision's reader)
    with open(folder / "data_batch_1", "rb") as f:
        pickle.load(f)
    assert marker.read_text() == "ran"
    marker.unlink()
    with pytest.raises(ValueError) as info:
        data.load_cifar10(str(tmp_path))
    msg = str(info.value)
    assert "data_batch_1: not a CIFAR-10 python batch" in msg
    assert "refused global __builtin__.exec" in msg and "\n" not in msg  # protocol 2 names
    assert not marker.exists()
    # the unpickler alone, on other globals
    for payload in (pickle.dumps(os.system), pickle.dumps(RunsCode(marker))):
        with pytest.raises(pickle.UnpicklingError, match="refused global"):
            standard.ArraysOnlyUnpickler(io.BytesIO(payload)).load()
    assert not marker.exists()
    arr = standard.ArraysOnlyUnpickler(io.BytesIO(pickle.dumps(
        {"a": np.arange(3, dtype=np.uint8), "b": [1, "x", b"y", 2.5]}))).load()
    assert arr["a"].tolist() == [0, 1, 2] and arr["b"] == [1, "x", b"y", 2.5]
