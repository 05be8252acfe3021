"""benchmarks/images.py run tiny: a conditional digits run from the PNG folder it writes, judged
per class in its own process, and the report it renders. Functional only: 2 training steps say
nothing about the recipes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("images_bench", ROOT / "benchmarks" / "images.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

pytest.importorskip("torchvision")


def test_digits_folder_run_is_judged_per_class_and_reported(tmp_path, monkeypatch):
    monkeypatch.setitem(bench.RECIPES, "conv", ["--model", "conv", "--feature-maps", "4",
                                                "--batch", "8", "--n-critic", "1", "--steps",
                                                "2"])
    results = tmp_path / "results"
    assert bench.main(["digits", "--work", str(tmp_path / "w"), "--models", "conv", "--seeds",
                       "42", "--results", str(results), "--date", "19990101"]) == 0
    folder = tmp_path / "w" / "digits32"
    assert sorted(p.name for p in folder.iterdir()) == [str(k) for k in range(10)]
    assert sum(1 for _ in folder.rglob("*.png")) == 1797
    report = json.loads(next(results.glob("images-*-19990101.json")).read_text())
    (row,) = report["digits"]["rows"]
    assert row["model"] == "conv" and row["seed"] == 42 and row["steps"] == 2
    assert len(row["class_accuracy"]) == 10 and 0 <= row["mean_class_accuracy"] <= 1
    assert row["command"].startswith("wgangp-fast train --images ")
    md = next(results.glob("images-*-19990101.md")).read_text()
    assert "| conv | 42 |" in md and "**conv: median [worst]**" in md
