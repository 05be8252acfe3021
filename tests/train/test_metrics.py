"""Quality metrics of wgangp_fast.train.metrics against cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from wgangp_fast.train import data, metrics


def test_w1_exact_of_a_translation_is_its_length():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((200, 2))
    shift = np.array([0.3, -0.4])
    assert metrics.wasserstein1_exact(a, a + shift) == pytest.approx(0.5, rel=1e-9)
    assert metrics.wasserstein1_exact(a, a[::-1]) == pytest.approx(0.0, abs=1e-12)


def test_w1_exact_matches_scipy_in_one_dimension():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(300), rng.exponential(size=300)
    as2 = np.stack([a, np.zeros_like(a)], 1)
    bs2 = np.stack([b, np.zeros_like(b)], 1)
    assert metrics.wasserstein1_exact(as2, bs2) == pytest.approx(wasserstein_distance(a, b),
                                                                 rel=1e-9)


def test_w1_exact_checks_its_inputs():
    with pytest.raises(ValueError, match="same shape"):
        metrics.wasserstein1_exact(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="NaN"):
        metrics.wasserstein1_exact(np.full((3, 2), np.nan), np.zeros((3, 2)))


def test_sliced_w1():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((500, 8))
    assert metrics.sliced_wasserstein1(a, a[::-1]) == pytest.approx(0.0, abs=1e-12)
    shift = np.zeros(8)
    shift[0] = 1.0
    near = metrics.sliced_wasserstein1(a, a + 0.1 * shift)
    far = metrics.sliced_wasserstein1(a, a + shift)
    assert far == pytest.approx(10 * near, rel=1e-6)
    # in one dimension every projection is +-1: the 1-D W1 exactly
    x, y = rng.standard_normal((400, 1)), rng.uniform(size=(300, 1))
    assert metrics.sliced_wasserstein1(x, y, n_projections=4) == pytest.approx(
        wasserstein_distance(x[:, 0], y[:, 0]), rel=0.02)


def test_mode_coverage_protocol():
    ring = data.ring8()
    real = ring.reference(2500, seed=0)
    out = metrics.mode_coverage(real, ring.centers, ring.std)
    assert out["modes_covered"] == 8 and out["modes_total"] == 8
    # within 3 std in 2-D: 1 - exp(-4.5) = 0.9889
    assert out["high_quality_share"] == pytest.approx(1 - np.exp(-4.5), abs=0.01)
    assert out["min_count"] == 20

    three = real[np.isin(np.linalg.norm(real[:, None] - ring.centers[None], axis=2).argmin(1),
                         [0, 3, 5])]
    assert metrics.mode_coverage(three, ring.centers, ring.std)["modes_covered"] == 3
    between = np.zeros((2500, 2))
    assert metrics.mode_coverage(between, ring.centers, ring.std)["high_quality_share"] == 0.0

    sparse = np.concatenate([np.repeat(ring.centers[:1], 2480, 0), ring.centers[1:2].repeat(19, 0),
                             ring.centers[2:3]])
    counted = metrics.mode_coverage(sparse, ring.centers, ring.std)
    assert counted["modes_covered"] == 1
    assert counted["per_mode_high_quality"][:3] == [2480, 19, 1]


def test_frechet_distance_of_gaussians():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((20000, 3))
    b = rng.standard_normal((20000, 3)) + np.array([1.0, 2.0, 0.0])
    assert metrics.frechet_distance(a, b) == pytest.approx(5.0, abs=0.1)
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    c = rng.standard_normal((20000, 3)) * 2.0
    # equal means, covariances I and 4I: 3 * (1 + 4 - 2 * 2) = 3
    assert metrics.frechet_distance(a, c) == pytest.approx(3.0, abs=0.15)


def test_digits_evaluator_on_real_and_collapsed_samples():
    ev = metrics._digits_evaluator()
    assert ev.test_accuracy > 0.9
    real = ev.real
    good = ev.evaluate(real)
    assert good["classes_covered"] == 10
    assert good["frechet_distance"] == pytest.approx(0.0, abs=1e-6)
    zeros = real[np.repeat(np.flatnonzero(data.load_digits().labels == 0), 5)]
    collapsed = ev.evaluate(zeros)
    assert collapsed["classes_covered"] == 1
    assert collapsed["frechet_distance"] > good["frechet_distance_real_halves"]
    noise = np.random.default_rng(4).uniform(-1, 1, size=(500, 64))
    assert ev.evaluate(noise)["frechet_distance"] > 10 * good["frechet_distance_real_halves"]
    with pytest.raises(ValueError, match="64 values"):
        ev.evaluate(np.zeros((4, 10)))


def test_evaluate_picks_the_dataset_metrics():
    ring = data.ring8()
    out = metrics.evaluate(ring, ring.reference(300, seed=5), w1_samples=300)
    assert out["modes_covered"] == 8
    assert out["w1_exact"] < 0.3 and out["w1_exact_real"] < 0.3
    swiss = data.SwissRollDataset()
    far = metrics.evaluate(swiss, swiss.reference(200, seed=1) + 1.0, w1_samples=200)
    assert far["w1_exact"] > 0.9 and "modes_covered" not in far
    digits = data.load_digits(image_size=16)
    out = metrics.evaluate(digits, digits.data[:300].numpy())
    assert out["classes_covered"] == 10
