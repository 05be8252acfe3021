"""benchmarks/quality.py run tiny: two seeds of a few ring8 steps, each in its own training
process as the tool runs them. Checks the per-seed rows against each run's own metrics.json, the
median and worst, the header a report must carry, early stopping and failed runs. Functional
only: nothing is timed, and the figures of 4 training steps say nothing about a recipe."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import statistics
from pathlib import Path

import pytest
import torch

from wgangp_fast.bench import device_label
from wgangp_fast.train.config import DATASET_PRESETS

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("quality", ROOT / "benchmarks" / "quality.py")
quality = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(quality)

TINY = ["--", "--steps", "4", "--eval-samples", "500"]


def _argv(base: Path, *options: str) -> list:
    return ["--preset", "ring8", "--label", "tiny", "--runs", str(base / "runs"),
            "--results", str(base / "results"), *options, *TINY]


def _report(base: Path):
    (md,) = (base / "results").glob("quality-ring8-tiny-*.md")
    js = md.with_suffix(".json")
    return json.loads(js.read_text()), md.read_text(), md.name


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    base = tmp_path_factory.mktemp("quality")
    assert quality.main(_argv(base, "--seeds", "42", "1", "--jobs", "2")) == 0
    return (*_report(base), base)


def test_one_row_per_seed_from_that_runs_metrics(report):
    data, _, _, base = report
    rows = data["rows"]
    assert [r["seed"] for r in rows] == [42, 1]
    for r in rows:
        folder = base / "runs" / "ring8-tiny" / f"seed-{r['seed']}"
        metrics = json.loads((folder / "metrics.json").read_text())
        assert json.loads((folder / "config.json").read_text())["seed"] == r["seed"]
        assert r["status"] == "done" and r["steps"] == 4
        for key in ("modes_covered", "modes_total", "high_quality_share", "w1_exact",
                    "w1_exact_real", "train_seconds"):
            assert r[key] == metrics[key]
        assert r["meets_target"] == (r["modes_covered"] >= 8
                                     and r["high_quality_share"] >= 0.90)
    # each run trained its own seed: the two generators differ
    assert rows[0]["w1_exact"] != rows[1]["w1_exact"]


def test_median_and_worst_of_the_rows(report):
    data, md, _, _ = report
    rows, summary = data["rows"], data["summary"]
    w1 = [r["w1_exact"] for r in rows]
    share = [r["high_quality_share"] for r in rows]
    assert summary["w1_exact"] == {"median": statistics.median(w1), "worst": max(w1), "n": 2}
    assert summary["high_quality_share"]["median"] == statistics.median(share)
    assert summary["high_quality_share"]["worst"] == min(share)
    assert "worst" not in summary["w1_exact_real"]  # the floor of the metric, not a result
    median_line = next(line for line in md.splitlines() if line.startswith("| **median**"))
    worst_line = next(line for line in md.splitlines() if line.startswith("| **worst**"))
    assert f"| {statistics.median(w1):.3f} |" in median_line
    assert f"| {max(w1):.3f} |" in worst_line
    for r in rows:
        assert any(line.startswith(f"| {r['seed']} |") and f"| {r['w1_exact']:.3f} |" in line
                   for line in md.splitlines())


def test_header_names_command_machine_torch_and_date(report):
    data, md, name, _ = report
    h = data["header"]
    today = dt.date.today()
    assert h["date"] == today.isoformat()
    assert h["torch"] == torch.__version__
    assert h["device"] == device_label(torch.device("cpu"))
    assert h["cores"] >= 1 and h["cpu"]
    assert h["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert h["jobs"] == 2 and h["threads"] == 1
    assert h["command"].startswith("python benchmarks/quality.py --preset ring8")
    assert h["train_command"] == ("python -m wgangp_fast train --dataset ring8 --seed N "
                                  "--threads 1 --out DIR --steps 4 --eval-samples 500")
    assert h["wall_seconds"] > 0
    assert name == f"quality-ring8-tiny-{h['device']}-{today:%Y%m%d}.md"
    # what the runs trained with: the preset, and the steps given after '--'
    assert data["settings"]["steps"] == 4
    assert data["settings"]["lr"] == DATASET_PRESETS["ring8"]["lr"]
    met = sum(bool(r["meets_target"]) for r in data["rows"])
    assert data["met"] == f"{met}/2 seeds"
    for text in (h["command"], h["train_command"], f"torch {h['torch']}", h["date"],
                 h["device"], h["commit"]):
        assert text in md


def test_summarise_takes_the_worst_in_each_figures_direction():
    rows = [{"status": "done", "modes_covered": 8, "w1_exact": 0.1, "frechet_distance": 2.0},
            {"status": "done", "modes_covered": 6, "w1_exact": 0.3, "frechet_distance": 1.0},
            {"status": "done", "modes_covered": 7, "w1_exact": 0.2},
            {"status": "failed"}, {"status": "not run"}]
    s = quality.summarise(rows)
    assert s["modes_covered"] == {"median": 7, "worst": 6, "n": 3}
    assert s["w1_exact"] == {"median": 0.2, "worst": 0.3, "n": 3}
    assert s["frechet_distance"] == {"median": 1.5, "worst": 2.0, "n": 2}
    assert "classes_covered" not in s


def test_stop_on_fail_ends_a_candidate_at_the_first_miss(tmp_path):
    # 4 steps never reach ring8's target: with one run at a time, the first seed stops the rest
    assert quality.main(_argv(tmp_path, "--seeds", "42", "1", "--jobs", "1",
                              "--stop-on-fail")) == 0
    data, md, _ = _report(tmp_path)
    assert [(r["seed"], r["status"]) for r in data["rows"]] == [(42, "done"), (1, "not run")]
    assert data["rows"][0]["meets_target"] is False
    assert data["summary"]["w1_exact"]["n"] == 1
    assert "| 42 |" in md and "MISSES target" in md and "not run" in md
    assert not (tmp_path / "runs" / "ring8-tiny" / "seed-1" / "metrics.json").exists()


def test_a_failed_run_is_reported_with_its_error(tmp_path, capsys):
    argv = ["--preset", "ring8", "--seeds", "3", "--label", "bad", "--runs",
            str(tmp_path / "runs"), "--results", str(tmp_path / "results"), "--", "--lr", "0"]
    assert quality.main(argv) == 1
    (js,) = (tmp_path / "results").glob("quality-ring8-bad-*.json")
    (row,) = json.loads(js.read_text())["rows"]
    assert row["status"] == "failed" and row["returncode"] == 2
    assert "--lr" in row["error"]
    assert "failed (exit 2)" in js.with_suffix(".md").read_text()


@pytest.mark.parametrize("argv, words", [
    (["--preset", "ring9"], "--preset"),
    (["--preset", "ring8", "--jobs", "0"], "--jobs must be >= 1"),
    (["--preset", "ring8", "--threads", "0"], "--threads must be >= 1"),
    (["--preset", "ring8", "--seeds", "1", "1"], "must not repeat"),
    (["--preset", "ring8", "--seeds", "-1"], "--seeds must be integers >= 0"),
    (["--preset", "ring8", "--", "--lr", "1e-3"], "--label"),
    (["--preset", "ring8", "--label", "a/b"], "--label"),
    (["--preset", "ring8", "--label", "x", "--", "--seed", "3"], "--seed after '--'"),
    (["--preset", "ring8", "--label", "x", "--", "--out=runs/x"], "--out after '--'"),
])
def test_bad_arguments_are_refused_by_name(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        quality.parse_args(argv)
    assert info.value.code == 2
    assert words in capsys.readouterr().err


def test_swissroll_target_bounds_w1_over_the_real_floor_from_above():
    # an upper bound: a W1 within 1.5x the real-vs-real W1 meets it, one above does not
    near = quality.with_derived({"w1_exact": 0.12, "w1_exact_real": 0.10})
    far = quality.with_derived({"w1_exact": 0.16, "w1_exact_real": 0.10})
    assert near["w1_over_real"] == pytest.approx(1.2)
    assert quality.meets_target("swissroll", near) is True
    assert quality.meets_target("swissroll", far) is False
    # a run without the figures cannot pass for one that meets it
    assert quality.meets_target("swissroll", quality.with_derived({"w1_exact": 0.1})) is False
    assert quality.target_text("swissroll") == "W1 / real-vs-real W1 <= 1.5 at every seed"
    # lower bounds elsewhere are unchanged
    assert quality.target_text("ring8") == "modes >= 8, high-quality share >= 90% at every seed"
    s = quality.summarise([dict(near, status="done"), dict(far, status="done")])
    assert s["w1_over_real"]["worst"] == pytest.approx(1.6)


def test_the_tiny_ring8_rows_carry_their_w1_over_the_floor(report):
    data, md, _, _ = report
    for r in data["rows"]:
        assert r["w1_over_real"] == pytest.approx(r["w1_exact"] / r["w1_exact_real"])
    assert "W1 / real-vs-real" in md


def test_the_header_names_variables_that_pick_other_kernels(tmp_path, monkeypatch):
    for name in quality.NUMERICS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MKL_CBWR", "AVX2")
    assert quality.main(_argv(tmp_path, "--seeds", "42", "--jobs", "1")) == 0
    data, md, _ = _report(tmp_path)
    assert data["header"]["numerics_env"] == {"MKL_CBWR": "AVX2"}
    assert "- run with MKL_CBWR=AVX2" in md
    assert data["rows"][0]["status"] == "done"
