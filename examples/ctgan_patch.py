"""CTGAN on scikit-learn's wine table, with wgangp_fast's fused gradient penalty.

The change to an existing CTGAN script is the import and the `wgf_ctgan.patch()` call; `fit`,
`sample` and everything else stay as they are.

    python examples/ctgan_patch.py
"""

from __future__ import annotations

import pandas as pd
from ctgan import CTGAN
from sklearn.datasets import load_wine

from wgangp_fast.integrations import ctgan as wgf_ctgan


def wine_frame() -> pd.DataFrame:
    """Five of the measurements, the cultivar as a category and a derived alcohol band."""
    bunch = load_wine(as_frame=True)
    df = bunch.frame[["alcohol", "malic_acid", "flavanoids", "color_intensity", "proline"]].copy()
    df["cultivar"] = [str(bunch.target_names[t]) for t in bunch.target]
    df["alcohol_band"] = pd.qcut(df["alcohol"], 3, labels=["low", "mid", "high"]).astype(str)
    return df


def main() -> None:
    wgf_ctgan.patch()

    data = wine_frame()
    model = CTGAN(epochs=2, batch_size=50, pac=10, enable_gpu=True)
    model.set_random_state(0)
    model.fit(data, discrete_columns=["cultivar", "alcohol_band"])

    print(model.loss_values.to_string(index=False))
    print(model.sample(5).to_string(index=False))
    print(f"fused penalty in use: {wgf_ctgan.is_patched()}")


if __name__ == "__main__":
    main()
