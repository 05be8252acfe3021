"""The benchmark suite's plumbing, run tiny on the CPU: the CSV schema, merging, ratios, and that
the baseline it times computes what the fused ops compute. Functional only: nothing is timed."""

from __future__ import annotations

import csv
import datetime as dt
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from wgangp_fast import bench
from wgangp_fast.testing import autograd_gradient_norm_penalty

EXPECTED_HEADER = ("device,date,kind,name,backend,dtype,size_bytes,median_ms,p20_ms,p80_ms,"
                   "gbps,copy_gbps,peak_mem_mb,torch,triton,setup_s")
TINY = ["--device", "cpu", "--sizes", "0.0625", "--repeats", "2", "--threads", "1"]


def _read(path):
    with open(path, newline="") as f:
        header = f.readline().rstrip("\n")
        f.seek(0)
        return header, list(csv.DictReader(f))


@pytest.fixture(autouse=True, scope="module")
def _keep_threads():
    # --threads sets torch's global thread count; the other tests run with the usual one.
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def results(tmp_path_factory, _keep_threads):
    out = tmp_path_factory.mktemp("bench")
    assert bench.main(TINY + ["--suite", "ops", "--out", str(out)]) == 0
    # the compiled step mode through aot_eager: the plumbing is tested, not inductor (seconds)
    assert bench.main(TINY + ["--suite", "steps", "--critics", "ctgan", "mlp28", "--clock", "cpu",
                              "--iterations", "--compile-backend", "aot_eager",
                              "--out", str(out)]) == 0
    (csv_path,) = out.glob("*.csv")
    return out, csv_path


def test_csv_has_the_schema_and_both_suites(results):
    out, csv_path = results
    header, rows = _read(csv_path)
    assert header == EXPECTED_HEADER
    assert csv_path.name == f"cpu-{bench.os.cpu_count()}cores-{dt.date.today():%Y%m%d}.csv"
    ops = [r for r in rows if r["kind"] == "op"]
    steps = [r for r in rows if r["kind"] == "step"]
    assert {r["name"] for r in ops} == {n + s for n in bench.OP_NAMES for s in ("", "@image")}
    assert {r["backend"] for r in ops} == {"cpu", "reference"}
    variants = ("reference", "wgangp_fast", "eager", "compile", "no_penalty")  # no graphs on CPU
    assert {(r["name"], r["backend"]) for r in steps} == {
        (c + it, v) for c in ("ctgan", "mlp28") for it in ("", bench.ITERATION_SUFFIX)
        for v in variants}
    for r in rows:
        assert r["device"] == bench.device_label(torch.device("cpu"))
        assert r["torch"] == torch.__version__
        dt.date.fromisoformat(r["date"])
        med, p20, p80 = (float(r[k]) for k in ("median_ms", "p20_ms", "p80_ms"))
        assert 0 < p20 <= med <= p80 and math.isfinite(p80)
        assert int(r["size_bytes"]) > 0
        assert float(r["peak_mem_mb"]) >= 0
        if r["kind"] == "op":
            assert float(r["gbps"]) > 0 and float(r["copy_gbps"]) > 0
        else:
            assert r["gbps"] == "" and r["copy_gbps"] == ""
        # the setup time of a mode that compiles, and only of those
        assert (r["setup_s"] != "") == (r["backend"] == "compile")
        if r["setup_s"]:
            assert float(r["setup_s"]) > 0
    assert (out / csv_path.name.replace(".csv", ".md")).read_text().count("| --- |") >= 3
    assert (out / csv_path.name.replace(".csv", ".png")).stat().st_size > 0


def test_ratios_are_positive_and_finite(results):
    _, csv_path = results
    rows = bench.read_csv(csv_path)
    speedups = bench.op_speedups(rows)
    assert len(speedups) == 2 * len(bench.OP_NAMES)
    assert all(math.isfinite(s) and s > 0 for _, s in speedups)
    steps = bench.step_ratios(rows)
    assert [s["name"] for s in steps] == ["mlp28", "ctgan", "mlp28-iteration", "ctgan-iteration"]
    for s in steps:
        for key in ("a/b", "b/c", "a/c"):
            assert math.isfinite(s[key]) and s[key] > 0


def test_rerun_replaces_rows_instead_of_appending(results):
    out, csv_path = results
    _, before = _read(csv_path)
    assert bench.main(TINY + ["--suite", "ops", "--shapes", "image", "--ops", "roundtrip",
                              "--out", str(out), "--no-plot"]) == 0
    _, after = _read(csv_path)
    keys = [tuple(r[k] for k in bench.ROW_KEY) for r in after]
    assert len(keys) == len(set(keys)) == len(before)


def test_mode_table_has_every_variant_against_the_seed_code(results):
    _, csv_path = results
    modes = bench.mode_speedups(bench.read_csv(csv_path))
    assert [m["name"] for m in modes] == ["mlp28", "ctgan", "mlp28-iteration", "ctgan-iteration"]
    for m in modes:
        assert m["variants"] == ["reference", "wgangp_fast", "eager", "compile", "no_penalty"]
        assert m["speedup"]["reference"] == 1.0
        assert all(math.isfinite(x) and x > 0 for x in m["speedup"].values())
    text = csv_path.with_suffix(".md").read_text()
    assert "## Steps and iterations by mode" in text and "| mlp28-iteration | float32 |" in text


def test_results_without_the_setup_column_still_read(tmp_path):
    """Files written before the step modes (no setup_s) load with it empty."""
    path = tmp_path / "old.csv"
    path.write_text(",".join(bench.HEADER[:-1]) + "\n"
                    + "d,2026-11-22,op,roundtrip,cpu,float32,8,1,1,1,1,1,0,t,\n")
    (row,) = bench.read_csv(path)
    assert row["setup_s"] == "" and row["median_ms"] == "1"


def test_wrong_header_is_refused(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("device,date,kind\n")
    with pytest.raises(ValueError, match="header"):
        bench.read_csv(path)


def test_merge_keeps_old_rows_and_replaces_same_key():
    def row(name, backend, ms):
        return dict(zip(bench.HEADER, ["d", "2024-01-01", "op", name, backend, "float32", "8",
                                       ms, ms, ms, "1", "1", "0", "t", "", ""]))

    merged = bench.merge_rows([row("roundtrip", "cpu", "2"), row("interpolate", "cpu", "1")],
                              [row("roundtrip", "cpu", "3")])
    assert sorted((r["name"], r["median_ms"]) for r in merged) == [("interpolate", "1"),
                                                                  ("roundtrip", "3")]


def test_percentile_matches_numpy():
    xs = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0]
    for q in (0, 20, 50, 80, 100):
        assert bench.percentile(xs, q) == pytest.approx(np.percentile(xs, q))


def test_file_stem_is_safe():
    stem = bench.file_stem("NVIDIA H100 80GB HBM3", dt.date(2025, 3, 4))
    assert stem == "NVIDIA-H100-80GB-HBM3-20250304"


@pytest.mark.parametrize("shape", bench.SHAPES)
def test_baseline_and_fused_cases_compute_the_same(shape):
    # The timed baseline must be the seed code and compute what the fused op computes, or the
    # speed-ups would compare different work.
    n, d, pac = bench.op_geometry(shape, 40_000, torch.float32)
    sets = bench.make_op_inputs(n, d, torch.float32, torch.device("cpu"), 1)
    for name in bench.OP_NAMES:
        results = {}
        for backend in ("cpu", "reference"):
            fn = bench.op_case(name, backend, sets, pac)
            torch.manual_seed(1)
            results[backend] = fn(0)
        got, want = results["cpu"], results["reference"]
        for g, w in zip(got if isinstance(got, tuple) else (got,),
                        want if isinstance(want, tuple) else (want,)):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
    g = sets[0].grads.detach()
    want = autograd_gradient_norm_penalty(g, pac=pac, scale=bench.LAMBDA_GP)
    torch.testing.assert_close(bench.seed_penalty(g, pac), want)


def test_render_rewrites_markdown_and_chart_from_a_csv(results, tmp_path):
    out, csv_path = results
    copy = tmp_path / csv_path.name
    copy.write_text(csv_path.read_text())
    md = copy.with_suffix(".md")
    md.write_text((out / md.name).read_text())
    assert bench.main(["--render", str(copy)]) == 0
    text = md.read_text()
    assert "Latest command:" in text and "## Ops" in text and "## Critic steps" in text
    assert copy.with_suffix(".png").stat().st_size > 0
    with pytest.raises(SystemExit, match="no such results CSV"):
        bench.main(["--render", str(tmp_path / "missing.csv")])


def test_paired_ratio_median_and_interval():
    a = [2.0 * (1 + 0.01 * k) for k in range(100)]
    b = [1.0 * (1 + 0.01 * k) for k in range(100)]
    assert bench.paired_ratio(a, b) == pytest.approx((2.0, 2.0, 2.0))
    # Ratios 0.90, 0.91, ..., 1.89 (shuffled rounds): median 1.395, the interval brackets it and
    # holds about +-10 ranks of 100.
    ratios = [0.9 + 0.01 * k for k in range(100)]
    order = list(range(100))
    order.reverse()
    med, lo, hi = bench.paired_ratio([ratios[i] for i in order], [1.0] * 100)
    assert med == pytest.approx(1.395)
    assert lo < med < hi
    assert 0.08 <= med - lo <= 0.12 and 0.08 <= hi - med <= 0.12


def test_step_markdown_reports_the_paired_ratios(results):
    out, csv_path = results
    text = csv_path.with_suffix(".md").read_text()
    for critic in ("ctgan", "mlp28"):
        assert re.search(rf"- {critic} float32: reference / variant, paired, 95% CI, \d+ rounds: "
                         rf"wgangp_fast \d+\.\d+ \[\d+\.\d+, \d+\.\d+\]; eager", text)


def test_results_go_where_the_user_says_by_default_a_named_folder_here(tmp_path, monkeypatch,
                                                                       capsys):
    """`wgangp-fast bench` without --out writes into ./wgangp_fast_bench and says where, never
    into a benchmarks/ folder of the current directory; the repository's benchmarks/run.py keeps
    its own benchmarks/results."""
    monkeypatch.chdir(tmp_path)
    tiny = TINY + ["--suite", "ops", "--shapes", "tabular", "--ops", "interpolate", "--no-plot"]
    assert bench.main(tiny) == 0
    out = tmp_path / bench.cli.DEFAULT_OUT
    written = sorted(p.name for p in out.iterdir())
    assert [p.suffix for p in map(Path, written)] == [".csv", ".md"], written
    assert sorted(p.name for p in tmp_path.iterdir()) == [bench.cli.DEFAULT_OUT]
    said = capsys.readouterr().out
    assert f"results: {out / written[0]}, {out / written[1]}" in said
    assert bench.main(tiny + ["--out", "elsewhere/deeper"]) == 0
    assert len(list((tmp_path / "elsewhere" / "deeper").glob("*.csv"))) == 1
    (tmp_path / "a-file").write_text("")
    with pytest.raises(SystemExit, match="--out a-file: exists and is not a folder"):
        bench.main(tiny + ["--out", "a-file"])
    run = Path(bench.__file__).resolve().parents[2] / "benchmarks" / "run.py"
    helped = subprocess.run([sys.executable, str(run), "--help"], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert str(run.parent / "results") in "".join(helped.stdout.split())  # argparse wraps it
