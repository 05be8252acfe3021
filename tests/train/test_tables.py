"""Tables keep each column's support and shape: CTGAN's mode-specific normalisation (a Gaussian
mixture per numeric column, positive columns in log space, decoded values in the observed
range), the codec stored in the checkpoint (decoding without the file, the same encoding on
resume), the generator's tanh / Gumbel-softmax output layer."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from wgangp_fast import cli
from wgangp_fast.train import WGANGPConfig, WGANGPTrainer, data
from wgangp_fast.train.data import tables
from wgangp_fast.train.models import TabularGenerator

pytestmark = pytest.mark.usefixtures("one_thread")


def _table(tmp_path, n=600, seed=0):
    rng = np.random.default_rng(seed)
    income = np.exp(rng.normal(10, 0.8, n))
    two_bumps = np.where(rng.random(n) < 0.4, rng.normal(-5, 0.5, n), rng.normal(3, 1.0, n))
    rooms = rng.integers(1, 6, n)
    city = rng.choice(["Lyon", "Nice", "Paris"], n)
    path = tmp_path / "t.csv"
    with open(path, "w") as f:
        f.write("income,bumps,rooms,city\n")
        for row in zip(income, two_bumps, rooms, city):
            f.write(f"{row[0]:.2f},{row[1]:.4f},{row[2]},{row[3]}\n")
    return str(path)


def test_modes_logs_and_ranges_are_fitted_per_column(tmp_path):
    ds = data.load_tabular_csv(_table(tmp_path))
    income, bumps, rooms = (ds.numeric[c] for c in ("income", "bumps", "rooms"))
    assert income.log and len(income.means) == 1  # a log-normal: one Gaussian in log space
    assert not bumps.log and len(bumps.means) == 2  # two bumps, one of them below 0
    assert bumps.means[0] == pytest.approx(-5, abs=0.2)
    assert bumps.means[1] == pytest.approx(3, abs=0.2)
    assert rooms.integer and income.low == pytest.approx(ds.raw["income"].min())
    # (alpha, one-hot mode) per numeric column, one-hot per categorical one
    widths = [b - a for _, a, b in ds.spans]
    assert widths == [2, 3, 1 + len(rooms.means), 3]
    assert ds.tanh_columns == [0, 2, 5]
    assert ds.categorical_spans == [(1, 2), (3, 5), (6, 5 + widths[2]), (ds.dim - 3, ds.dim)]


def test_real_rows_decode_back_to_their_values(tmp_path):
    ds = data.load_tabular_csv(_table(tmp_path))
    back = ds.codec.decode(ds.data.numpy())
    for col in ("income", "bumps"):
        close = np.isclose(back[col], ds.raw[col], rtol=1e-4, atol=1e-4)
        assert close.mean() > 0.99  # the rest sat more than 3.96 std from their mode
    assert np.array_equal(back["rooms"], ds.raw["rooms"])
    assert back["city"] == ds.raw["city"]
    # written with the file's decimals: incomes in cents, the bumps to 4 places
    assert ds.numeric["income"].decimals == 2 and ds.numeric["bumps"].decimals == 4
    rows = ds.codec.decode_rows(np.random.default_rng(3).normal(0, 1, (20, ds.dim)))
    assert all(round(r[0], 2) == r[0] and round(r[1], 4) == r[1] for r in rows)
    assert all(isinstance(r[2], int) for r in rows)


def test_numbers_in_scientific_notation_are_not_rounded(tmp_path):
    path = tmp_path / "sci.csv"
    path.write_text("v\n" + "".join(f"{1e-3 * (i + 1):.3e}\n" for i in range(30)))
    ds = data.load_tabular_csv(str(path))
    assert ds.numeric["v"].decimals is None
    values = ds.codec.decode(np.random.default_rng(0).normal(0, 1, (50, ds.dim)))["v"]
    assert any(round(v, 6) != v for v in values)


def test_any_model_output_decodes_inside_each_columns_support(tmp_path):
    ds = data.load_tabular_csv(_table(tmp_path))
    rng = np.random.default_rng(1)
    x = rng.normal(0, 3, (5000, ds.dim))  # far outside what the generator emits
    back = ds.codec.decode(x)
    for col, values in ds.raw.items():
        if col in ds.numeric:
            assert back[col].min() >= values.min() and back[col].max() <= values.max()
    assert back["income"].min() > 0


def test_the_standard_transform_is_the_plain_standardisation(tmp_path):
    ds = data.load_tabular_csv(_table(tmp_path), transform="standard")
    assert ds.dim == 1 + 1 + 1 + 3 and ds.tanh_columns == []
    assert float(ds.data[:, 0].mean()) == pytest.approx(0, abs=1e-5)
    back = ds.codec.decode(-10 * np.ones((1, ds.dim)))
    assert back["income"][0] < 0  # what "mode" prevents
    with pytest.raises(ValueError, match="transform must be one of mode, standard"):
        data.load_tabular_csv(_table(tmp_path), transform="quantile")


def test_the_codec_is_plain_data_and_decodes_the_same_from_a_checkpoint(tmp_path):
    ds = data.load_tabular_csv(_table(tmp_path))
    sig = json.loads(json.dumps(data.signature(ds)))
    stored = data.StoredDataset(sig)
    assert stored.kind == "tabular" and stored.shape == ds.shape
    assert stored.categorical_spans == ds.categorical_spans
    x = np.random.default_rng(2).normal(0, 1, (50, ds.dim))
    a, b = ds.codec.decode_rows(x), stored.decode_rows(x)
    assert a == b
    with pytest.raises(RuntimeError, match="holds no data"):
        stored.sample(2, torch.Generator())


def test_the_generator_emits_tanh_scalars_and_one_hot_blocks(tmp_path):
    ds = data.load_tabular_csv(_table(tmp_path))
    gen = TabularGenerator(4, ds.dim, hidden=(8, 8), categorical_spans=ds.categorical_spans,
                           tanh_columns=ds.tanh_columns, tanh_scale=ds.tanh_scale)
    out = gen(torch.randn(64, 4) * 50).detach()
    assert ds.tanh_scale == tables.ALPHA_SCALE == 4
    for i in ds.tanh_columns:
        assert out[:, i].abs().max() <= 4 and out[:, i].abs().max() > 1
    for a, b in ds.categorical_spans:
        assert torch.allclose(out[:, a:b].sum(1), torch.ones(64))
    with pytest.raises(ValueError, match="tanh_columns: 1 is not a column"):
        TabularGenerator(4, ds.dim, categorical_spans=ds.categorical_spans, tanh_columns=[1])


def test_a_resumed_run_encodes_with_its_checkpoints_codec_not_a_new_fit(tmp_path, monkeypatch):
    path = _table(tmp_path)
    cfg = WGANGPConfig.for_dataset("csv", data_path=path, steps=2, batch_size=20, pac=5,
                                   hidden_dim=8, latent_dim=4, n_critic=1, device="cpu",
                                   out_dir=str(tmp_path / "run"))
    first = WGANGPTrainer(cfg)
    first.train()

    def no_fit(*args, **kw):
        raise AssertionError("refitted on resume")

    monkeypatch.setattr(tables, "_fit_modes", no_fit)
    resumed = WGANGPTrainer.from_checkpoint(str(tmp_path / "run" / "checkpoint.pt"), steps=3)
    assert torch.equal(resumed.dataset.data, first.dataset.data)
    resumed.train()
    assert resumed.step == 3


def test_a_csv_run_needs_scikit_learn_only_for_the_mode_transform(tmp_path, monkeypatch,
                                                                   capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "sklearn" else real(name, *a))
    path = _table(tmp_path)
    out = tmp_path / "run"
    assert cli.main(["train", "--csv", path, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "sklearn (the Gaussian mixtures of --table-transform mode)" in err
    assert "pip install 'wgangp_fast[train]'" in err and not out.exists()
    assert cli.main(["train", "--csv", path, "--out", str(out), "--no-progress",
                     "--table-transform", "standard", "--steps", "1", "--batch", "20",
                     "--pac", "5", "--hidden-dim", "8", "--n-critic", "1",
                     "--eval-samples", "100"]) == 0


def test_table_metrics_and_pictures_are_in_the_columns_units(tmp_path):
    path = _table(tmp_path)
    cfg = WGANGPConfig.for_dataset("csv", data_path=path, steps=2, batch_size=20, pac=5,
                                   hidden_dim=8, latent_dim=4, n_critic=1, device="cpu",
                                   n_eval_samples=300)
    t = WGANGPTrainer(cfg)
    t.train()
    metrics = t.write_outputs(str(tmp_path / "out"))
    income = metrics["columns"]["income"]
    assert income["real_p50"] == pytest.approx(np.percentile(t.dataset.raw["income"], 50))
    assert income["generated_min"] > 0 and income["outside_real_range"] == 0
    assert 0 <= metrics["category_tv_max"] <= 1
    assert metrics["column_quantile_error_max"] >= income["quantile_error"]
    rows = (tmp_path / "out" / "samples.csv").read_text().splitlines()
    assert rows[0] == "income,bumps,rooms,city" and len(rows) == 2501


def test_a_checkpoint_from_before_the_transforms_resumes_with_standardised_columns(tmp_path):
    path = _table(tmp_path)
    cfg = WGANGPConfig.for_dataset("csv", data_path=path, steps=2, batch_size=20, pac=5,
                                   hidden_dim=8, latent_dim=4, n_critic=1, device="cpu",
                                   out_dir=str(tmp_path / "run"), table_transform="standard")
    WGANGPTrainer(cfg).train()
    ckpt = str(tmp_path / "run" / "checkpoint.pt")
    state = torch.load(ckpt, weights_only=True)
    del state["config"]["table_transform"], state["data"]["table"], state["data"]["kind"]
    torch.save(state, ckpt)
    resumed = WGANGPTrainer.from_checkpoint(ckpt, steps=3)
    assert resumed.config.table_transform == "standard" and resumed.dataset.tanh_columns == []
    resumed.train()
    assert resumed.step == 3
