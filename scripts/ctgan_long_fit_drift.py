"""How far a long seeded CTGAN fit with wgangp_fast's penalty drifts from CTGAN's own, against
the drift of CTGAN's own penalty with lambda one float32 ulp larger.

Three seeded fits of the same CTGAN: CTGAN as installed, CTGAN patched by
wgangp_fast.integrations.ctgan, and CTGAN with its own penalty scaled by float32's next value
above 10 (a one-ulp change of the penalty and of its gradient). Prints, for the two changed fits,
the per-step relative difference of the penalty from the unchanged fit: the first step above
1e-6, 1e-3 and 1e-2, and the median over the last half of the fit.

    python scripts/ctgan_long_fit_drift.py --epochs 100 --threads 1               # iris, small nets
    python scripts/ctgan_long_fit_drift.py --table breast-cancer --rows 1000 --ctgan-defaults

The tables: iris (sklearn's bundled copy, a categorical species column and a binned petal-size
column added; with batch 50 and (32, 32) networks) or benchmarks/ctgan_epoch.py's breast-cancer
table (with CTGAN's defaults: batch 500, (256, 256) networks, embedding 128).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np
import pandas as pd
import torch
from ctgan import CTGAN
from ctgan.synthesizers import ctgan as ctgan_module
from sklearn.datasets import load_iris

from wgangp_fast.integrations import ctgan as wgf_ctgan

METHOD = "calc_gradient_penalty"
ORIGINAL = ctgan_module.Discriminator.__dict__[METHOD]
NEXT_TEN = float(np.nextafter(np.float32(10), np.float32(11)))


def iris_frame() -> pd.DataFrame:
    bunch = load_iris(as_frame=True)
    df = bunch.frame.drop(columns=["target"])
    df["species"] = [str(bunch.target_names[t]) for t in bunch.target]
    df["petal_size"] = pd.cut(df["petal length (cm)"], bins=[0.0, 2.5, 5.0, 10.0],
                              labels=["small", "medium", "large"]).astype(str)
    return df


def table(name: str, rows: int) -> pd.DataFrame:
    if name == "iris":
        return iris_frame()
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                    "benchmarks"))
    from ctgan_epoch import breast_cancer_table
    return breast_cancer_table(rows, seed=0)


def fit(df: pd.DataFrame, epochs: int, variant: str, sizes: dict,
        discrete: list) -> np.ndarray:
    """The penalty of every discriminator step of a seeded fit."""
    values = []
    if variant == "wgangp_fast":
        wgf_ctgan.patch()
    inner = ctgan_module.Discriminator.__dict__[METHOD]

    def recorder(self, real_data, fake_data, device="cpu", pac=10, lambda_=10):
        if variant == "one-ulp":
            lambda_ = NEXT_TEN
        pen = inner(self, real_data, fake_data, device, pac, lambda_)
        values.append(float(pen.detach()))
        return pen

    model = CTGAN(**sizes, epochs=epochs, pac=10, enable_gpu=False)
    model.set_random_state(0)
    setattr(ctgan_module.Discriminator, METHOD, recorder)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model.fit(df, discrete_columns=discrete)
    finally:
        setattr(ctgan_module.Discriminator, METHOD, inner)
        if variant == "wgangp_fast":
            wgf_ctgan.unpatch()
    assert ctgan_module.Discriminator.__dict__[METHOD] is ORIGINAL
    return np.array(values)


def describe(name: str, got: np.ndarray, want: np.ndarray) -> str:
    rel = np.abs(got - want) / np.abs(want)
    firsts = []
    for limit in (1e-6, 1e-3, 1e-2):
        above = np.nonzero(rel > limit)[0]
        firsts.append(f"first step > {limit:g}: {above[0] + 1 if above.size else 'none'}")
    last_half = np.median(rel[len(rel) // 2:])
    return (f"{name}: {len(rel)} steps, max rel. difference in steps 1-50 "
            f"{rel[:50].max():.2e}; {'; '.join(firsts)}; median over the last half "
            f"{last_half:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", choices=("iris", "breast-cancer"), default="iris")
    parser.add_argument("--rows", type=int, default=1000, help="rows of the breast-cancer table")
    parser.add_argument("--ctgan-defaults", action="store_true",
                        help="CTGAN's default batch and network sizes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    df = table(args.table, args.rows)
    discrete = (["species", "petal_size"] if args.table == "iris"
                else ["diagnosis", "size_band"])
    sizes = ({} if args.ctgan_defaults else
             dict(embedding_dim=16, generator_dim=(32, 32), discriminator_dim=(32, 32),
                  batch_size=50))
    start = time.time()
    ctgan_own = fit(df, args.epochs, "ctgan", sizes, discrete)
    fused = fit(df, args.epochs, "wgangp_fast", sizes, discrete)
    one_ulp = fit(df, args.epochs, "one-ulp", sizes, discrete)
    shown = "CTGAN defaults" if args.ctgan_defaults else f"{sizes}"
    print(f"CTGAN on {args.table} ({len(df)} rows), {shown}, pac 10, {args.epochs} epochs, "
          f"{args.threads} thread(s), torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d')}, {time.time() - start:.0f} s")
    print(describe("wgangp_fast vs CTGAN", fused, ctgan_own))
    print(describe("CTGAN with lambda one float32 ulp above 10 vs CTGAN", one_ulp, ctgan_own))


if __name__ == "__main__":
    main()
