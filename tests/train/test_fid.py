"""FID, KID and IS (wgangp_fast.train.fid) through torchmetrics, on a small feature network
standing in for Inception-v3: FID against scipy's matrix square root, KID against a direct
unbiased MMD^2, IS against its formula; the one-line message where Inception's weights are
absent; weights files read as weights only; and the trainer's measurements, which leave the
training run unchanged."""

from __future__ import annotations

import os
import pickle
import sys

import numpy as np
import pytest
import torch
from torch import nn

from wgangp_fast.train import WGANGPConfig, WGANGPTrainer
from wgangp_fast.train import fid as fid_mod

from ..files import RunsCode

pytest.importorskip("torchmetrics")
pytestmark = pytest.mark.usefixtures("one_thread")


class StandIn(nn.Module):
    """uint8 [N, 3, H, W] -> (8 pooled ReLU features, 5 logits): Inception's two outputs, small."""

    def __init__(self, seed=0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # the caller's random stream stays as it was
            torch.manual_seed(seed)
            self.conv = nn.Conv2d(3, 8, 3, 2, 1)
            self.fc = nn.Linear(8, 5)

    def forward(self, x):
        assert x.dtype == torch.uint8 and x.shape[1] == 3
        h = torch.relu(self.conv(x.float() / 127.5 - 1)).mean((2, 3))
        return h, self.fc(h)


def _images(n, low, high, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (n, 3, 12, 12), generator=g).to(torch.uint8)


def _scipy_frechet(a, b):
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = np.real(linalg.sqrtm(s_a @ s_b))
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * covmean))


def _unbiased_mmd2(x, y):
    """MMD^2 with the kernel k(a, b) = (a.b / d + 1)^3, diagonal terms left out (unbiased)."""
    d = x.shape[1]

    def k(a, b):
        return (a @ b.T / d + 1.0) ** 3

    m, n = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy))
            / (n * (n - 1)) - 2 * kxy.mean())


def test_fid_kid_is_match_their_formulas_on_the_same_features():
    net = StandIn()
    quality = fid_mod.ImageQuality(net, kid_subsets=1, kid_subset_size=150, is_splits=1)
    real, fake = _images(150, 0, 256, 0), _images(150, 40, 200, 1)
    quality.set_real([real[:70], real[70:]])  # batches are accumulated
    out = quality.measure([fake])
    feats_r, _ = quality.features([real])
    feats_f, logits = quality.features([fake])
    a, b = feats_r.numpy(), feats_f.numpy()
    assert out["fid"] == pytest.approx(_scipy_frechet(a, b), rel=1e-6, abs=1e-9)
    assert out["fid"] > 1e-3  # two different distributions
    # one subset of all the samples: KID is exactly the unbiased MMD^2 of the two sets
    assert out["kid_mean"] == pytest.approx(_unbiased_mmd2(a, b), rel=1e-6, abs=1e-12)
    p = torch.softmax(logits, 1).numpy()
    marginal = p.mean(0)
    expected_is = np.exp((p * (np.log(p) - np.log(marginal))).sum(1).mean())
    assert out["inception_score_mean"] == pytest.approx(expected_is, rel=1e-6)
    # the same images on both sides: FID ~ 0 and KID ~ 0
    same = fid_mod.ImageQuality(net, kid_subsets=1, kid_subset_size=150)
    same.set_real([real])
    again = same.measure([real])
    assert abs(again["fid"]) < 1e-6
    assert again["kid_mean"] == pytest.approx(_unbiased_mmd2(a, a), rel=1e-6, abs=1e-12)
    assert abs(again["kid_mean"]) < 0.02 * out["kid_mean"]
    assert "inception_score_std" not in out  # one split has no spread


def test_kid_subsets_are_seeded_and_leave_the_global_stream_alone():
    quality = fid_mod.ImageQuality(StandIn(), kid_subsets=5, kid_subset_size=20, seed=3)
    quality.set_real([_images(60, 0, 256, 0)])
    torch.manual_seed(11)
    before = torch.rand(3)
    torch.manual_seed(11)
    one = quality.measure([_images(50, 0, 200, 1)])
    after = torch.rand(3)
    assert torch.equal(before, after)
    assert quality.measure([_images(50, 0, 200, 1)]) == one


def test_grey_and_model_space_images_become_uint8_rgb():
    x = torch.tensor([[-1.0, 0.0], [1.0, 0.5]]).reshape(1, 1, 2, 2)
    out = fid_mod.to_uint8_rgb(x)
    assert out.dtype == torch.uint8 and out.shape == (1, 3, 2, 2)
    assert out[0, 0].tolist() == [[0, 128], [255, 191]] and torch.equal(out[0, 0], out[0, 2])


def test_absent_inception_weights_are_one_line_naming_the_file_and_where(tmp_path, monkeypatch):
    pytest.importorskip("torch_fidelity")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    # a closed local port stands in for an unreachable download host: answered at once
    with pytest.raises(fid_mod.MetricsUnavailable) as info:
        fid_mod.inception_network(host=("127.0.0.1", 9), timeout=1.0)
    msg = str(info.value)
    assert "weights-inception-2015-12-05-6726825d.pth" in msg
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in msg
    assert "--inception-weights PATH" in msg and "\n" not in msg
    with pytest.raises(fid_mod.MetricsUnavailable, match=r"--inception-weights .*: no such file"):
        fid_mod.inception_network(str(tmp_path / "nope.pth"))


def test_a_weights_file_that_would_run_code_is_read_as_weights_only(tmp_path):
    pytest.importorskip("torch_fidelity")
    marker = tmp_path / "pwned"
    path = tmp_path / "weights.pth"
    torch.save({"x": RunsCode(marker)}, path)  # torch.save pickles the object as it is
    with pytest.raises(fid_mod.MetricsUnavailable) as info:
        fid_mod.inception_network(str(path))
    assert "could not be loaded as weights only" in str(info.value)
    assert not marker.exists()
    assert os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD") is None  # restored


def test_without_torchmetrics_the_message_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchmetrics", None)
    monkeypatch.setitem(sys.modules, "torchmetrics.image.fid", None)
    with pytest.raises(fid_mod.MetricsUnavailable, match=r"pip install 'wgangp_fast\[metrics\]'"):
        fid_mod.ImageQuality(StandIn())


def small(**kw):
    settings = dict(steps=4, batch_size=16, hidden_dim=8, latent_dim=4, n_critic=2,
                    device="cpu", n_eval_samples=200, fid_samples=60, model="conv",
                    feature_maps=4, image_size=8)
    settings.update(kw)
    return WGANGPConfig.for_dataset("digits", **settings)


def _weights(t):
    return [p.detach().clone() for p in t.generator.parameters()]


def test_the_trainer_measures_every_k_steps_without_changing_the_run(tmp_path):
    plain = WGANGPTrainer(small(fid_samples=0))
    plain.train()
    t = WGANGPTrainer(small(fid_every=2, out_dir=str(tmp_path)))
    t.use_feature_network(StandIn())
    notes = []
    t.on_note = notes.append
    t.train()
    assert [r["step"] for r in t.fid_history] == [2, 4]
    assert all(r["fid"] > 0 and r["fid_samples"] == 60 for r in t.fid_history)
    assert len(notes) == 2 and notes[0].startswith("step 2: FID ")
    for a, b in zip(_weights(plain), _weights(t)):
        assert torch.equal(a, b)
    metrics = t.write_outputs()
    assert {"fid", "kid_mean", "kid_std", "inception_score_mean"} <= set(metrics)
    assert metrics["fid_history"] == t.fid_history
    state = WGANGPTrainer.read_checkpoint(t.checkpoint_path())
    assert [r["step"] for r in state["fid_history"]] == [2, 4]


def test_a_run_without_inception_weights_says_so_once_and_goes_on(tmp_path, monkeypatch):
    def unavailable(weights=None, **kw):
        raise fid_mod.MetricsUnavailable("FID / KID skipped: no weights here")

    monkeypatch.setattr(fid_mod, "inception_network", unavailable)
    t = WGANGPTrainer(small(fid_every=2, out_dir=str(tmp_path)))
    notes = []
    t.on_note = notes.append
    t.train()
    metrics = t.write_outputs()
    assert notes == ["FID / KID skipped: no weights here"]
    assert "fid" not in metrics and "frechet_distance" in metrics  # the other metrics stay
    # without on_note, the library says it as a warning
    t2 = WGANGPTrainer(small(fid_every=0))
    with pytest.warns(RuntimeWarning, match="FID / KID skipped"):
        assert t2.image_quality() == {}


def test_pickle_module_is_not_used_by_the_metrics(monkeypatch):
    """Nothing on the metrics path unpickles: pickle.load and loads are not called."""
    def refuse(*a, **k):
        raise AssertionError("unpickled")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    quality = fid_mod.ImageQuality(StandIn(), kid_subsets=2, kid_subset_size=10)
    quality.set_real([_images(20, 0, 256, 0)])
    assert np.isfinite(quality.measure([_images(20, 0, 256, 1)])["fid"])
