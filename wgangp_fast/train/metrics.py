"""Sample-quality metrics for the trainer.

- `wasserstein1_exact`: exact W1 between two equal-size point clouds (the optimal matching, by
  scipy's linear_sum_assignment on the Euclidean cost matrix).
- `sliced_wasserstein1`: W1 averaged over random 1-D projections, for higher dimensions.
- `mode_coverage`: the VEEGAN / PacGAN protocol for Gaussian mixtures. A sample is "high
  quality" when it lies within 3 std of its nearest mode centre; a mode counts as covered when it
  receives at least `min_count` high-quality samples. PacGAN counts a mode as lost below 20
  high-quality samples out of 2500, so min_count is 20 per 2500 samples, scaled with the count.
- `table_columns`: a table's columns compared in their own units: each numeric column's 5th, 50th
  and 95th percentiles (relative error) and the share of values outside the real range, each
  categorical column's total variation distance.
- `DigitsEvaluator`: a small MLP classifier trained on scikit-learn's bundled digits; class
  coverage of generated digits and a Frechet distance in the classifier's hidden-layer features
  (FID's formula, with this small network in place of Inception); for conditional generators,
  the share of each class's samples classified as that class (judge_classes).
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from typing import Dict

import numpy as np

__all__ = [
    "DigitsEvaluator",
    "evaluate",
    "frechet_distance",
    "mode_coverage",
    "sliced_wasserstein1",
    "table_columns",
    "wasserstein1_exact",
]

QUANTILES = (5, 50, 95)


def _points(name: str, x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be an array of shape [N, ...] with N >= 1, got "
                         f"shape {list(x.shape)}")
    x = x.reshape(x.shape[0], -1)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def wasserstein1_exact(a, b) -> float:
    """Exact W1 between the empirical distributions of two equal-size samples [N, D]."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    a, b = _points("a", a), _points("b", b)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape [N, D], got {list(a.shape)} and "
                         f"{list(b.shape)}")
    cost = cdist(a, b)
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


def sliced_wasserstein1(a, b, n_projections: int = 256, seed: int = 0) -> float:
    """Mean over random unit directions of the 1-D W1 between the projected samples."""
    a, b = _points("a", a), _points("b", b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must have the same dimension, got {a.shape[1]} and {b.shape[1]}")
    rng = np.random.default_rng(seed)
    dirs = rng.standard_normal((a.shape[1], n_projections))
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
    pa, pb = np.sort(a @ dirs, axis=0), np.sort(b @ dirs, axis=0)
    if len(pa) != len(pb):
        q = (np.arange(max(len(pa), len(pb))) + 0.5) / max(len(pa), len(pb))
        pa, pb = np.quantile(pa, q, axis=0), np.quantile(pb, q, axis=0)
    return float(np.abs(pa - pb).mean())


def mode_coverage(samples, centers, std: float, n_std: float = 3.0,
                  min_count: int | None = None) -> Dict[str, object]:
    """Modes covered and share of high-quality samples (VEEGAN / PacGAN protocol).

    min_count defaults to ceil(20 * N / 2500): PacGAN's 20 high-quality samples out of 2500.
    """
    x = _points("samples", samples)
    c = np.asarray(centers, dtype=np.float64)
    if min_count is None:
        min_count = max(1, math.ceil(20 * len(x) / 2500))
    d = np.sqrt(((x[:, None, :] - c[None, :, :]) ** 2).sum(-1))
    nearest = d.argmin(1)
    good = d[np.arange(len(x)), nearest] <= n_std * std
    counts = np.bincount(nearest[good], minlength=len(c))
    return {
        "modes_total": int(len(c)),
        "modes_covered": int((counts >= min_count).sum()),
        "high_quality_share": float(good.mean()),
        "min_count": int(min_count),
        "per_mode_high_quality": counts.tolist(),
    }


def frechet_distance(feats_a, feats_b) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between Gaussian fits."""
    from scipy import linalg

    a, b = _points("feats_a", feats_a), _points("feats_b", feats_b)
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # A small ridge keeps sqrtm well defined when features are degenerate (dead ReLU units give
    # zero-variance directions); 1e-6 is far below the distances reported.
    ridge = np.eye(len(s_a)) * 1e-6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm((s_a + ridge) @ (s_b + ridge))
    covmean = np.real(covmean)
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b)
                  - 2.0 * np.trace(covmean))
    return max(value, 0.0)


class DigitsEvaluator:
    """A 64-32-10 MLP classifier on scikit-learn's bundled 8x8 digits (inputs in [-1, 1]).

    Trained once (deterministic, random_state 0) on 80% of the 1797 images; its held-out accuracy is
    reported with the metrics. Features for the Frechet distance are its 32 hidden ReLU units.
    """

    def __init__(self) -> None:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
        from sklearn.neural_network import MLPClassifier

        bunch = load_digits()
        x = bunch.data / 8.0 - 1.0
        x_tr, x_te, y_tr, y_te = train_test_split(x, bunch.target, test_size=0.2, random_state=0,
                                                  stratify=bunch.target)
        self.clf = MLPClassifier(hidden_layer_sizes=(32,), alpha=1e-2, solver="lbfgs",
                                 max_iter=400, random_state=0)
        self.clf.fit(x_tr, y_tr)
        self.test_accuracy = float(self.clf.score(x_te, y_te))
        self.real = x

    def features(self, x) -> np.ndarray:
        x = _points("x", x)
        return np.maximum(x @ self.clf.coefs_[0] + self.clf.intercepts_[0], 0.0)

    def judge_classes(self, samples, labels, confidence: float = 0.5) -> Dict[str, object]:
        """How well a conditional generator draws the class it is asked for: per class k, the
        share of its samples (labels == k) the classifier puts in class k with probability >=
        `confidence` (samples as in evaluate, any side that is a multiple of 8)."""
        x = np.clip(digits_8x8(samples), -1.0, 1.0)
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(x):
            raise ValueError(f"{len(labels)} labels for {len(x)} samples")
        proba = self.clf.predict_proba(x)
        hit = (proba.argmax(1) == labels) & (proba.max(1) >= confidence)
        per_class = [float(hit[labels == k].mean()) if (labels == k).any() else None
                     for k in range(10)]
        judged = [a for a in per_class if a is not None]
        return {"class_accuracy": per_class,
                "mean_class_accuracy": float(np.mean(judged)),
                "worst_class_accuracy": float(np.min(judged)),
                "classes_recognised": int(sum(a >= 0.5 for a in judged))}

    def evaluate(self, samples, min_share: float = 0.01, confidence: float = 0.5) -> Dict[str, object]:
        """samples: generated digits in [-1, 1], shape [N, 64] or [N, 1, 8, 8].

        A class is covered when at least `min_share` of the samples are classified into it with
        probability >= `confidence`.
        """
        x = np.clip(_points("samples", samples), -1.0, 1.0)
        if x.shape[1] != 64:
            raise ValueError(f"digits samples must have 64 values (8x8), got {x.shape[1]}")
        proba = self.clf.predict_proba(x)
        pred, conf = proba.argmax(1), proba.max(1)
        sure = conf >= confidence
        counts = np.bincount(pred[sure], minlength=10)
        half = len(self.real) // 2
        return {
            "classes_covered": int((counts >= min_share * len(x)).sum()),
            "class_counts": counts.tolist(),
            "confident_share": float(sure.mean()),
            "frechet_distance": frechet_distance(self.features(x), self.features(self.real)),
            "frechet_distance_real_halves": frechet_distance(self.features(self.real[:half]),
                                                             self.features(self.real[half:])),
            "classifier_test_accuracy": self.test_accuracy,
        }


def digits_8x8(samples) -> np.ndarray:
    """Digits [N, 1, S, S] (or [N, S * S]), S a multiple of 8, as the classifier's [N, 64]:
    resized digits (conv models) have their k x k blocks averaged back to 8x8."""
    x = _points("samples", samples)
    side = math.isqrt(x.shape[1])
    if side * side == x.shape[1] and side % 8 == 0 and side > 8:
        k = side // 8
        x = x.reshape(len(x), 8, k, 8, k).mean(axis=(2, 4)).reshape(len(x), 64)
    return x


def table_columns(real: Dict[str, object], generated: Dict[str, object]) -> Dict[str, object]:
    """Real and generated tables ({column: values}, numeric columns as float arrays, categorical
    ones as lists of strings, in the columns' units) compared column by column: per column the
    figures, and over the columns the worst quantile error (|q_gen - q_real| / |q_real| at the
    5th, 50th and 95th percentiles), the largest share of generated values outside the real
    range, and the largest total variation distance between category shares."""
    columns: Dict[str, Dict[str, object]] = {}
    worst_q, worst_out, worst_tv = [], [], []
    for name, values in real.items():
        fake = generated[name]
        if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
            r = values.astype(np.float64)
            g = np.asarray(fake, dtype=np.float64)
            qr, qg = np.percentile(r, QUANTILES), np.percentile(g, QUANTILES)
            errors = np.abs(qg - qr) / np.maximum(np.abs(qr), 1e-12)
            outside = float(((g < r.min()) | (g > r.max())).mean())
            columns[name] = {"real_min": float(r.min()), "generated_min": float(g.min()),
                             "real_max": float(r.max()), "generated_max": float(g.max()),
                             **{f"real_p{q}": float(v) for q, v in zip(QUANTILES, qr)},
                             **{f"generated_p{q}": float(v) for q, v in zip(QUANTILES, qg)},
                             "quantile_error": float(errors.max()),
                             "outside_real_range": outside}
            worst_q.append(float(errors.max()))
            worst_out.append(outside)
        else:
            cats = sorted(set(values) | set(fake))
            pr = np.array([list(values).count(c) for c in cats], dtype=np.float64) / len(values)
            pg = np.array([list(fake).count(c) for c in cats], dtype=np.float64) / len(fake)
            tv = float(0.5 * np.abs(pr - pg).sum())
            columns[name] = {"total_variation": tv}
            worst_tv.append(tv)
    out: Dict[str, object] = {"columns": columns}
    if worst_q:
        out["column_quantile_error_max"] = max(worst_q)
        out["column_outside_range_max"] = max(worst_out)
    if worst_tv:
        out["category_tv_max"] = max(worst_tv)
    return out


@lru_cache(maxsize=1)
def _digits_evaluator() -> DigitsEvaluator:
    return DigitsEvaluator()


def evaluate(dataset, samples, seed: int = 0, w1_samples: int = 1000,
             labels=None) -> Dict[str, object]:
    """The metrics that fit `dataset` (a wgangp_fast.train.data.Dataset) for model-space `samples`
    (of a conditional run: `labels` are the classes they were drawn for; the digits then also get
    judge_classes' per-class accuracy).

    The exact W1 uses the first `w1_samples` samples (the assignment problem is cubic in the
    count: 1000 points take about a second); `w1_exact_real` is the same statistic between two
    independent real samples of that size, the floor a perfect generator would reach.
    """
    x = _points("samples", samples)
    out: Dict[str, object] = {"n_samples": int(len(x))}
    name = getattr(dataset, "name", "")
    if getattr(dataset, "kind", "") == "points" or getattr(dataset, "kind", "") == "tabular":
        if x.shape[1] == 2:
            n = min(len(x), w1_samples)
            real = _points("real", dataset.reference(2 * n, seed=seed))
            n = min(n, len(real) // 2)
            out["w1_exact"] = wasserstein1_exact(x[:n], real[:n])
            out["w1_exact_real"] = wasserstein1_exact(real[n:2 * n], real[:n])
        else:
            n = min(len(x), 2500)
            real = _points("real", dataset.reference(n, seed=seed))
            n = min(n, len(real))
            out["sliced_w1"] = sliced_wasserstein1(x[:n], real[:n], seed=seed)
        if hasattr(dataset, "centers"):
            out.update(mode_coverage(x, dataset.centers, dataset.std))
        raw, codec = getattr(dataset, "raw", None), getattr(dataset, "codec", None)
        if raw and codec is not None:
            out.update(table_columns(raw, codec.decode(x)))
    elif name == "digits":
        out.update(_digits_evaluator().evaluate(digits_8x8(x)))
        if labels is not None:
            out.update(_digits_evaluator().judge_classes(x, labels))
    else:
        n = min(len(x), 2500)
        real = _points("real", dataset.reference(n, seed=seed))
        n = min(n, len(real))
        out["sliced_w1"] = sliced_wasserstein1(x[:n], real[:n], seed=seed)
    return out
