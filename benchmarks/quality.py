"""Training quality over seeds: trains a dataset's preset once per seed, each run its own process
(`python -m wgangp_fast train --dataset D --seed N --threads 1 --out DIR`, exactly what a user
runs), and reports every seed's figures and their median and worst.

    python benchmarks/quality.py --preset ring8          # seeds 42 and 1-6, min(cores, 7) at once
    python benchmarks/quality.py --preset all            # ring8, grid25, swissroll, digits
    python benchmarks/quality.py --preset ring8 --jobs 1 --seeds 42 1 2
    python benchmarks/quality.py --preset ring8 --label lr2e-3 --stop-on-fail -- --lr 2e-3

Flags after `--` go to every `train` run (a candidate recipe: give it a --label, so that its
results are not taken for the preset's). --stop-on-fail ends a candidate at the first seed that
misses the preset's target (TARGETS) and stops the runs still going.

Writes benchmarks/results/quality-<preset>[-<label>]-<device>-<yyyymmdd>.md and .json: the
command, machine, torch version, date and commit, then one row per seed and the median and worst
of each figure (modes covered, high-quality share, W1, classes covered, confident share, Frechet,
training time). Quality figures do not depend on machine load; training times do (the header
gives the load average and how many runs shared the machine).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PRESETS = ("ring8", "grid25", "swissroll", "digits")
SEEDS = (42, 1, 2, 3, 4, 5, 6)
# environment variables that change which kernels compute float32 results (MKL_CBWR=AVX2: MKL's
# code path for a CPU without AVX-512); a report run under one of them says so
NUMERICS_ENV = ("MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")
# the issue-24 targets each seed is held to (a benchmark, never a timed test): (figure, bound),
# a lower bound for a figure where higher is better (METRICS), an upper bound where lower is.
# swissroll has no modes: its W1 is held against the W1 between two real samples of the same size
# (the metric's floor, itself 0.087-0.149 over seeds 42 and 1-6 at 1000 samples); 1.5x allows the
# floor's own spread between its two draws and fails a generator that has not found the roll.
TARGETS: Dict[str, Tuple[Tuple[str, float], ...]] = {
    "ring8": (("modes_covered", 8), ("high_quality_share", 0.90)),
    "grid25": (("modes_covered", 25),),
    "swissroll": (("w1_over_real", 1.5),),
    "digits": (("classes_covered", 10),),
}
# (metrics.json key, column, better: "high" or "low", format)
METRICS = (
    ("modes_covered", "modes", "high", "{:d}"),
    ("high_quality_share", "high quality", "high", "pct"),
    ("w1_exact", "W1", "low", "{:.3f}"),
    ("w1_exact_real", "W1 real-vs-real", None, "{:.3f}"),
    ("w1_over_real", "W1 / real-vs-real", "low", "{:.2f}"),
    ("classes_covered", "classes", "high", "{:d}"),
    ("confident_share", "confident", "high", "pct"),
    ("frechet_distance", "Frechet", "low", "{:.2f}"),
    ("frechet_distance_real_halves", "Frechet real halves", None, "{:.2f}"),
    ("train_seconds", "train s", "low", "{:.0f}"),
    ("steps_per_second", "steps/s", "high", "{:.1f}"),
)
# set by the tool for every run, so not accepted after `--`
OWN_FLAGS = ("--dataset", "--seed", "--out", "--threads", "--csv", "--images", "--mnist",
             "--resume")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (with uncommitted changes)" if dirty.strip() else "")


def train_command(dataset: str, seed: int, out: Path, threads: int,
                  extra: Sequence[str] = ()) -> List[str]:
    return [sys.executable, "-m", "wgangp_fast", "train", "--dataset", dataset, "--seed",
            str(seed), "--threads", str(threads), "--out", str(out), "--no-progress", *extra]


def meets_target(dataset: str, row: Dict[str, Any]) -> bool | None:
    """Whether a finished run meets its dataset's target; None where the dataset has none."""
    target = TARGETS.get(dataset)
    if target is None:
        return None
    return all(row.get(key) is not None
               and (row[key] >= bound if _better(key) == "high" else row[key] <= bound)
               for key, bound in target)


def _better(key: str) -> str:
    return next(b for k, _, b, _ in METRICS if k == key)


def target_text(dataset: str) -> str:
    names = {"modes_covered": "modes", "high_quality_share": "high-quality share",
             "classes_covered": "classes", "w1_over_real": "W1 / real-vs-real W1"}
    target = TARGETS.get(dataset)
    if target is None:
        return "none set"

    def bound(k: str, v: float) -> str:
        if k.endswith("share"):
            return f">= {v:.0%}"
        return f">= {int(v)}" if _better(k) == "high" else f"<= {v:g}"

    return ", ".join(f"{names[k]} {bound(k, v)}" for k, v in target) + " at every seed"


def with_derived(row: Dict[str, Any]) -> Dict[str, Any]:
    """`row` with w1_over_real, its W1 over the W1 between two real samples, where both exist."""
    w1, floor = row.get("w1_exact"), row.get("w1_exact_real")
    if w1 is not None and floor:
        row["w1_over_real"] = w1 / floor
    return row


class Runner:
    """Runs train commands (from several threads at once) and reads their metrics. With
    stop_on_fail, the first run that fails or misses its target ends the runs still going and
    keeps the rest from starting; it decides in its own thread, before that thread takes the next
    run, so which runs start does not depend on timing when one runs at a time."""

    def __init__(self, stop_on_fail: bool = False) -> None:
        self.stop_on_fail = stop_on_fail
        self.stopped = threading.Event()
        self._live: set = set()
        self._lock = threading.Lock()

    def run(self, dataset: str, command: List[str]) -> Dict[str, Any]:
        row = self._run(command, cmd_out(command))
        if row["status"] == "done":
            row["meets_target"] = meets_target(dataset, row)
            row["settings"] = trained_settings(cmd_out(command))
        if self.stop_on_fail and (row["status"] == "failed" or row.get("meets_target") is False):
            self.stop()
        return row

    def _run(self, command: List[str], out: Path) -> Dict[str, Any]:
        if self.stopped.is_set():
            return {"status": "not run"}
        metrics_path = out / "metrics.json"
        out.mkdir(parents=True, exist_ok=True)
        # a metrics.json left by an earlier run in this folder must not pass for this one's
        metrics_path.unlink(missing_ok=True)
        threads = command[command.index("--threads") + 1]
        env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        start = time.perf_counter()
        with self._lock:
            if self.stopped.is_set():
                return {"status": "not run"}
            proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
            self._live.add(proc)
        output, _ = proc.communicate()
        with self._lock:
            self._live.discard(proc)
        wall = time.perf_counter() - start
        if self.stopped.is_set() and proc.returncode != 0:
            return {"status": "stopped", "wall_seconds": wall}
        if proc.returncode != 0 or not metrics_path.is_file():
            tail = "\n".join(output.strip().splitlines()[-5:])
            return {"status": "failed", "returncode": proc.returncode, "error": tail,
                    "wall_seconds": wall}
        metrics = json.loads(metrics_path.read_text())
        row = {"status": "done", "wall_seconds": wall}
        row.update({k: v for k, v in metrics.items() if not isinstance(v, (list, dict))})
        raw = metrics.get("raw_generator")
        if raw:
            row["raw_generator"] = raw
        return with_derived(row)

    def stop(self) -> None:
        with self._lock:
            self.stopped.set()
            for proc in self._live:
                proc.terminate()


def summarise(rows: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, float]]:
    """Per figure of METRICS present in the finished rows: median, worst (the lowest of a figure
    where higher is better, the highest where lower is) and the count of rows it is over."""
    done = [r for r in rows if r.get("status") == "done"]
    out: Dict[str, Dict[str, float]] = {}
    for key, _, better, _ in METRICS:
        values = [r[key] for r in done if r.get(key) is not None]
        if not values:
            continue
        entry = {"median": statistics.median(values), "n": len(values)}
        if better is not None:
            entry["worst"] = min(values) if better == "high" else max(values)
        out[key] = entry
    return out


def _fmt(key: str, value: Any, modes_total: int | None = None) -> str:
    if value is None:
        return ""
    fmt = next(f for k, _, _, f in METRICS if k == key)
    if fmt == "pct":
        return f"{100 * value:.1f}%"
    if fmt == "{:d}":
        text = f"{value:g}" if isinstance(value, float) else f"{value:d}"
        return f"{text}/{modes_total}" if key == "modes_covered" and modes_total else text
    return fmt.format(value)


def _status(row: Dict[str, Any]) -> str:
    if row["status"] == "failed":
        return f"failed (exit {row.get('returncode')})"
    if row["status"] == "done" and row.get("meets_target") is not None:
        return "meets target" if row["meets_target"] else "MISSES target"
    return row["status"]


def markdown(report: Dict[str, Any]) -> str:
    h, rows, summary = report["header"], report["rows"], report["summary"]
    keys = [k for k, *_ in METRICS if k in summary]
    columns = {k: c for k, c, *_ in METRICS}
    total = next((r["modes_total"] for r in rows if r.get("modes_total")), None)
    lines = [
        f"# Training quality over seeds: {report['preset']}, {h['device']}, {h['date']}",
        "",
        f"Command: `{h['command']}`",
        "",
        f"- each seed: `{h['train_command']}` (N the seed)",
        f"- settings that differ from the seed defaults: "
        f"{json.dumps(report['settings'], sort_keys=True)}",
        f"- machine: {h['device']} ({h['cpu']}, {h['cores']} cores usable, torch CPU "
        f"capability {h['cpu_capability']}), "
        f"{h['platform']}; {h['jobs']} run(s) at once, {h['threads']} thread(s) each; load "
        f"average {h['load_start']:.2f} at the start, {h['load_end']:.2f} at the end "
        f"(training times of a shared machine are inflated; the quality figures do not depend "
        f"on load)",
        f"- torch {h['torch']}, Python {h['python']}, wgangp_fast at {h['commit']}",
        *([f"- run with {' '.join(f'{k}={v}' for k, v in h['numerics_env'].items())}"]
          if h.get("numerics_env") else []),
        f"- date {h['date']}, {h['wall_seconds']:.0f} s in all",
        f"- target: {report['target']}; met at {report['met']}",
        "",
        "| seed | " + " | ".join(columns[k] for k in keys) + " | status |",
        "| --- " * (len(keys) + 2) + "|",
    ]
    for r in rows:
        cells = [_fmt(k, r.get(k), total) for k in keys]
        lines.append(f"| {r['seed']} | " + " | ".join(cells) + f" | {_status(r)} |")
    for stat in ("median", "worst"):
        cells = [_fmt(k, summary[k].get(stat), total) for k in keys]
        lines.append(f"| **{stat}** | " + " | ".join(cells) + " | |")
    failed = [r for r in rows if r["status"] == "failed"]
    for r in failed:
        lines += ["", f"seed {r['seed']} failed:", "```", r.get("error", ""), "```"]
    return "\n".join(lines) + "\n"


def trained_settings(out: Path) -> Dict[str, Any]:
    """The settings a finished run trained with (its config.json) where they differ from the
    seed defaults, less those that name the run rather than the recipe."""
    from wgangp_fast.train import WGANGPConfig

    defaults = WGANGPConfig().to_dict()
    saved = json.loads((out / "config.json").read_text())
    skip = {"seed", "out_dir", "checkpoint_every", "dataset"}
    return {k: v for k, v in saved.items() if k not in skip and defaults.get(k) != v}


def _check_extra(extra: Sequence[str]) -> None:
    for flag in extra:
        name = flag.split("=", 1)[0]
        if name in OWN_FLAGS:
            raise ValueError(f"{name} after '--': the tool sets it for every run (use --preset, "
                             f"--seeds, --runs, --threads)")


def parse_args(argv: Sequence[str]) -> Tuple[argparse.Namespace, List[str]]:
    argv = list(argv)
    extra: List[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                usage="%(prog)s [options] [-- train flags]")
    p.add_argument("--preset", required=True, choices=PRESETS + ("all",),
                   help="the dataset whose preset trains, or all four")
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS),
                   help="default: 42 1 2 3 4 5 6")
    p.add_argument("--jobs", type=int, default=None,
                   help="training processes at once (default: min(cores, runs))")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    p.add_argument("--label", default=None,
                   help="names a candidate's results (needed with train flags after '--')")
    p.add_argument("--stop-on-fail", action="store_true",
                   help="stop at the first seed that misses the target")
    p.add_argument("--runs", default=str(ROOT / "runs" / "quality"),
                   help="where the runs' folders go (default runs/quality)")
    p.add_argument("--results", default=str(RESULTS),
                   help="where the report goes (default benchmarks/results)")
    args = p.parse_args(argv)
    try:
        if any(s < 0 for s in args.seeds):
            raise ValueError(f"--seeds must be integers >= 0, got {args.seeds}")
        if len(set(args.seeds)) != len(args.seeds):
            raise ValueError(f"--seeds must not repeat a seed, got {args.seeds}")
        if args.jobs is not None and args.jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        if extra and not args.label:
            raise ValueError("train flags after '--' make a candidate, not the preset: name it "
                             "with --label")
        if args.label is not None and (not args.label or "/" in args.label):
            raise ValueError(f"--label must be a non-empty name without '/', got {args.label!r}")
        _check_extra(extra)
    except ValueError as exc:
        p.error(str(exc))
    return args, extra


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = parse_args(argv)
    import torch

    from wgangp_fast.bench import device_label

    presets = PRESETS if args.preset == "all" else (args.preset,)
    suffix = f"-{args.label}" if args.label else ""
    runs = Path(args.runs).resolve()
    jobs = args.jobs or max(1, min(_cores(), len(presets) * len(args.seeds)))
    today = datetime.date.today()
    header = {
        "command": "python benchmarks/quality.py " + shlex.join(argv),
        "device": device_label(torch.device("cpu")),
        "cpu": _cpu_model(), "cores": _cores(), "platform": platform.platform(),
        # the vector ISA torch's CPU kernels run with: float32 results differ between them
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        # variables that pick other kernels, and so other float32 roundings (the runs inherit them)
        "numerics_env": {k: os.environ[k] for k in NUMERICS_ENV if k in os.environ},
        "jobs": jobs, "threads": args.threads, "torch": torch.__version__,
        "python": platform.python_version(), "commit": _git_commit(),
        "date": today.isoformat(), "load_start": os.getloadavg()[0],
    }
    runner = Runner(args.stop_on_fail)
    started = time.perf_counter()
    rows: Dict[Tuple[str, int], Dict[str, Any]] = {}
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        futures = {}
        for d in presets:
            for seed in args.seeds:
                cmd = train_command(d, seed, runs / f"{d}{suffix}" / f"seed-{seed}",
                                    args.threads, extra)
                futures[pool.submit(runner.run, d, cmd)] = (d, seed)
        for fut in concurrent.futures.as_completed(futures):
            d, seed = futures[fut]
            row = {"seed": seed, **fut.result()}
            rows[(d, seed)] = row
            shown = ", ".join(f"{k} {_fmt(k, row[k])}" for k, *_ in METRICS[:7]
                              if row.get(k) is not None)
            print(f"{d} seed {seed}: {row['status']}" + (f": {shown}" if shown else ""),
                  flush=True)
    header["wall_seconds"] = time.perf_counter() - started
    header["load_end"] = os.getloadavg()[0]

    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    code = 0
    for d in presets:
        preset_rows = [rows[(d, s)] for s in args.seeds]
        done = [r for r in preset_rows if r["status"] == "done"]
        for r in done[1:]:
            r.pop("settings")
        met = sum(1 for r in done if r.get("meets_target"))
        report = {
            "preset": d + suffix, "dataset": d, "extra_flags": extra,
            "settings": next((r.pop("settings") for r in done), {}), "target": target_text(d),
            "met": (f"{met}/{len(preset_rows)} seeds" if d in TARGETS
                    else "no target"),
            "header": dict(header, train_command=shlex.join(
                ["python", "-m", "wgangp_fast", "train", "--dataset", d, "--seed", "N",
                 "--threads", str(args.threads), "--out", "DIR", *extra])),
            "rows": preset_rows, "summary": summarise(preset_rows),
        }
        stem = f"quality-{d}{suffix}-{header['device']}-{today:%Y%m%d}"
        text = markdown(report)
        (results / f"{stem}.md").write_text(text)
        (results / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
        print(text)
        print(f"wrote {results / stem}.md and .json")
        if any(r["status"] == "failed" for r in preset_rows):
            code = 1
    return code


def cmd_out(command: List[str]) -> Path:
    return Path(command[command.index("--out") + 1])


if __name__ == "__main__":
    raise SystemExit(main())
