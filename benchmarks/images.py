"""Training on a folder of images, measured (issue 34): conditional digits from a folder of PNGs,
the folder path's decoding throughput against the trainer's appetite, and the peak memory of a
50k x 32x32x3 folder run.

    python benchmarks/images.py digits      # conditional conv and resnet runs, seeds 42, 1, 2
    python benchmarks/images.py throughput  # decoding images/s with 1 and 2 threads
    python benchmarks/images.py memory      # peak RSS: 50k-image folder run vs ring8 run
    python benchmarks/images.py all         # the three, then the report

digits: scikit-learn's digits written as 32x32 PNGs in one subfolder per class (bilinear from
8x8, as `load_digits(image_size=32)` resizes them), then for each model and seed `python -m
wgangp_fast train --images DIR --conditional --model M ...` in its own process, as a user runs
it; afterwards every class is generated on request (200 samples per class from the saved
generator, WGANGPTrainer.generate_samples(labels=k)) and judged by the digits classifier of
wgangp_fast.train.metrics (DigitsEvaluator.judge_classes: the share of class k's samples it
puts in class k with probability >= 0.5, after averaging 4x4 blocks back to 8x8).

Writes benchmarks/results/images-<device>-<yyyymmdd>.md and .json (each part merges into the
JSON; the markdown is written from all of it).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SEEDS = (42, 1, 2)
# the recipes measured: small widths, a few minutes a run on a 2-core CPU
RECIPES: Dict[str, List[str]] = {
    "conv": ["--model", "conv", "--feature-maps", "16", "--batch", "32", "--lr", "5e-4",
             "--steps", "500"],
    "resnet": ["--model", "resnet", "--resnet-width", "16", "--batch", "32", "--lr", "1e-3",
               "--steps", "300"],
}
PER_CLASS = 200


def _device() -> str:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return f"cpu-{cores}cores"


def _stamp() -> str:
    return datetime.date.today().strftime("%Y%m%d")


def _paths(date: str):
    stem = Path(RESULTS) / f"images-{_device()}-{date}"
    return stem.with_suffix(".json"), stem.with_suffix(".md")


def _load(date: str) -> Dict[str, Any]:
    path, _ = _paths(date)
    return json.loads(path.read_text()) if path.is_file() else {}


def _save(date: str, part: str, value: Any) -> None:
    report = _load(date)
    report[part] = value
    report.setdefault("machine", {}).update(_machine())
    path, md = _paths(date)
    Path(RESULTS).mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    md.write_text(render(report))
    print(f"wrote {path} and {md}")


def _machine() -> Dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "unknown"
    return {"device": _device(), "cpu": cpu, "torch": torch.__version__,
            "python": platform.python_version(), "commit": commit,
            "load_average": [round(v, 1) for v in os.getloadavg()]}


# -- the digits folder ----------------------------------------------------------------------

def write_digits_folder(folder: Path) -> Path:
    """1797 32x32 grey PNGs, one subfolder per digit."""
    from PIL import Image

    from wgangp_fast.train.data import load_digits

    ds = load_digits(image_size=32)
    pixels = np.round((ds.data.numpy()[:, 0] + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    for k in range(10):
        (folder / str(k)).mkdir(parents=True, exist_ok=True)
    for i, (img, y) in enumerate(zip(pixels, ds.labels)):
        Image.fromarray(img).save(folder / str(int(y)) / f"{i:04d}.png")
    return folder


def judge(out: Path) -> Dict[str, Any]:
    """Every class generated on request from the run's checkpoint, judged by the digits
    classifier; the classifier-feature Frechet distance of all of them to the real digits."""
    import torch

    from wgangp_fast.train import WGANGPTrainer
    from wgangp_fast.train.metrics import DigitsEvaluator, digits_8x8

    torch.set_num_threads(1)
    trainer = WGANGPTrainer.from_checkpoint(str(out / "checkpoint.pt"))
    xs, ys = [], []
    for k, name in enumerate(trainer.class_names):
        xs.append(trainer.generate_samples(PER_CLASS, seed=10_000 + k, labels=name).numpy())
        ys += [int(name)] * PER_CLASS  # the folders are named after their digit
    evaluator = DigitsEvaluator()
    x = np.concatenate(xs)
    judged = evaluator.judge_classes(x, np.array(ys))
    overall = evaluator.evaluate(digits_8x8(x))
    return {**judged, "frechet_distance": overall["frechet_distance"],
            "frechet_distance_real_halves": overall["frechet_distance_real_halves"],
            "classifier_test_accuracy": overall["classifier_test_accuracy"],
            "train_seconds": trainer.train_seconds, "steps": trainer.step,
            "batch_size": trainer.config.batch_size, "n_critic": trainer.config.n_critic}


def run_digits(args) -> None:
    work = Path(args.work)
    folder = work / "digits32"
    if not folder.is_dir():
        write_digits_folder(folder)
    # the cache is built once, before the runs that share it
    from wgangp_fast.train.data import load_image_folder

    load_image_folder(str(folder), cache_dir=str(work / "cache"))

    def one(model: str, seed: int) -> Dict[str, Any]:
        out = work / f"{model}-{seed}"
        shutil.rmtree(out, ignore_errors=True)
        command = [sys.executable, "-m", "wgangp_fast", "train", "--images", str(folder),
                   "--conditional", *RECIPES[model], "--seed", str(seed), "--threads", "1",
                   "--out", str(out), "--no-progress", "--fid-samples", "0",
                   "--image-cache", str(work / "cache")]
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
        judged = subprocess.run([sys.executable, __file__, "judge", str(out)], cwd=ROOT, env=env,
                                capture_output=True, text=True)
        if judged.returncode != 0:
            raise SystemExit(f"judging {out} failed:\n{judged.stderr[-2000:]}")
        row = {"model": model, "seed": seed, "wall_seconds": round(wall, 1),
               "command": " ".join(["wgangp-fast"] + command[3:]),
               **json.loads(judged.stdout.strip().splitlines()[-1])}
        row["real_images_per_second"] = (row["steps"] * row["n_critic"] * row["batch_size"]
                                         / row["train_seconds"])
        print(json.dumps({k: v for k, v in row.items() if k != "class_accuracy"}), flush=True)
        return row

    runs = [(m, s) for m in args.models for s in args.seeds]
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda run: one(*run), runs))
    _save(args.date, "digits", {"recipes": {m: RECIPES[m] for m in args.models},
                                "per_class": PER_CLASS, "jobs": args.jobs, "rows": rows})


# -- decoding throughput ----------------------------------------------------------------------

def _decode_rate(folder: Path, workers: int, repeats: int) -> List[float]:
    from wgangp_fast.train.data import load_image_folder

    n = None
    rates = []
    for _ in range(repeats):
        cache = Path(tempfile.mkdtemp(prefix="wgangp_images_cache_"))
        try:
            start = time.perf_counter()
            ds = load_image_folder(str(folder), cache_dir=str(cache), workers=workers)
            seconds = time.perf_counter() - start
            n = len(ds)
            del ds
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        rates.append(n / seconds)
    return rates


def run_throughput(args) -> None:
    import torch

    torch.set_num_threads(1)
    work = Path(args.work)
    folders = {"digits 32x32 grey (1797 PNGs)": work / "digits32"}
    if not folders["digits 32x32 grey (1797 PNGs)"].is_dir():
        write_digits_folder(work / "digits32")
    big = work / "rgb50k"
    if big.is_dir():
        folders["synthetic 32x32 RGB (50000 PNGs)"] = big
    rows = []
    for name, folder in folders.items():
        repeats = args.repeats
        for workers in (1, 2):
            rates = _decode_rate(folder, workers, repeats)
            rows.append({"folder": name, "workers": workers, "repeats": repeats,
                         "images_per_second_median": statistics.median(rates),
                         "images_per_second_min": min(rates),
                         "images_per_second_max": max(rates)})
            print(json.dumps(rows[-1]))
    # the trainer's appetite in the same conditions: real images drawn per second by each recipe
    eat = {}
    for model in args.models:
        done = subprocess.run([sys.executable, __file__, "appetite", model, "--work", str(work)],
                              cwd=ROOT, capture_output=True, text=True,
                              env=dict(os.environ, OMP_NUM_THREADS="1"))
        if done.returncode != 0:
            raise SystemExit(done.stderr[-2000:])
        eat[model] = json.loads(done.stdout.strip().splitlines()[-1])
        print(model, eat[model])
    _save(args.date, "throughput", {"decode": rows, "trainer": eat})


def appetite(model: str, work: Path, steps: int = 20) -> Dict[str, float]:
    """Real images per second a recipe's training steps draw (after one warm-up step)."""
    import torch

    from wgangp_fast.cli import _overrides, build_parser
    from wgangp_fast.train import WGANGPConfig, WGANGPTrainer

    torch.set_num_threads(1)
    args = build_parser().parse_args(["train", "--images", str(work / "digits32"),
                                      "--conditional", *RECIPES[model]])
    values = _overrides(args)
    cfg = WGANGPConfig.for_dataset("images", **{k: v for k, v in values.items()
                                                if k != "dataset"},
                                   image_cache=str(work / "cache"), fid_samples=0, device="cpu")
    trainer = WGANGPTrainer(cfg)
    trainer.train_step()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    seconds = (time.perf_counter() - start) / steps
    return {"seconds_per_step": seconds,
            "real_images_per_second": cfg.n_critic * cfg.batch_size / seconds}


# -- peak memory -----------------------------------------------------------------------------

def write_rgb_folder(folder: Path, n: int) -> Path:
    """n 32x32 RGB PNGs of smooth random colour fields, in 10 subfolders."""
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32] / 32.0
    for k in range(10):
        (folder / f"c{k}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        a = rng.uniform(0, 255, (3, 3))
        img = a[:, 0, None, None] + a[:, 1, None, None] * xx / 2 + a[:, 2, None, None] * yy / 2
        img = img + rng.normal(0, 8, (3, 32, 32))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8).transpose(1, 2, 0)).save(
            folder / f"c{i % 10}" / f"{i:05d}.png")
    return folder


def _peak_rss_mb(command: List[str]) -> Dict[str, Any]:
    """Peak resident memory of a child process (its own, from wait4), and its wall time."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{output.decode()[-2000:]}")
    assert resource.getpagesize() > 0
    return {"peak_rss_mb": usage.ru_maxrss / 1024.0,  # kB on Linux
            "wall_seconds": round(time.perf_counter() - start, 1),
            "command": " ".join(["wgangp-fast"] + command[3:])}


def rss_stages(folder: Path, work: Path) -> Dict[str, float]:
    """Peak RSS (MB) of this process after each stage of a first run on `folder`."""
    import torch

    torch.set_num_threads(1)

    def peak() -> float:
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)

    from wgangp_fast.train import WGANGPConfig, WGANGPTrainer

    out = {"imports": peak()}
    cache = work / "cache-stages"
    shutil.rmtree(cache, ignore_errors=True)
    cfg = WGANGPConfig.for_dataset("images", data_path=str(folder), image_cache=str(cache),
                                   model="conv", feature_maps=16, steps=3, fid_samples=0,
                                   device="cpu")
    trainer = WGANGPTrainer(cfg)
    out["data decoded into the cache, models built"] = peak()
    trainer.train()
    out["3 steps"] = peak()
    trainer.write_outputs(str(work / "m-stages"))
    out["outputs and metrics written"] = peak()
    return out


def run_memory(args) -> None:
    work = Path(args.work)
    big = work / "rgb50k"
    if not big.is_dir():
        start = time.perf_counter()
        write_rgb_folder(big, args.n)
        print(f"wrote {args.n} PNGs in {time.perf_counter() - start:.0f} s")
    cache = work / "cache50k"
    shutil.rmtree(cache, ignore_errors=True)
    common = ["--steps", "3", "--threads", "1", "--no-progress", "--fid-samples", "0",
              "--checkpoint-every", "0"]
    base = [sys.executable, "-m", "wgangp_fast", "train"]
    rows = {"ring8": _peak_rss_mb(base + ["--dataset", "ring8", "--out", str(work / "m-ring8")]
                                  + common)}
    folder_run = base + ["--images", str(big), "--model", "conv", "--feature-maps", "16",
                         "--out", str(work / "m-folder"), "--image-cache", str(cache),
                         "--decode-workers", "2"] + common
    rows["folder, first run (decodes into the cache)"] = _peak_rss_mb(folder_run)
    rows["folder, cache built"] = _peak_rss_mb(folder_run)
    # where the memory goes, in one process: peak RSS after each stage of a first run
    stages = subprocess.run([sys.executable, __file__, "stages", str(big), "--work", str(work)],
                            cwd=ROOT, capture_output=True, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    uint8_mb = args.n * 3 * 32 * 32 / 1e6
    out = {"images": args.n, "uint8_mb": uint8_mb, "limit_mb": 2 * uint8_mb, "runs": rows,
           "stages": json.loads(stages.stdout.strip().splitlines()[-1])}
    base_mb = rows["ring8"]["peak_rss_mb"]
    for name, row in rows.items():
        row["beyond_ring8_mb"] = row["peak_rss_mb"] - base_mb
        print(name, json.dumps(row))
    _save(args.date, "memory", out)


# -- the report ------------------------------------------------------------------------------

def _fmt_pct(v) -> str:
    return f"{100 * v:.1f}%"


def render(report: Dict[str, Any]) -> str:
    m = report.get("machine", {})
    lines = [f"# Training on a folder of images (issue 34), {m.get('device', '')}", "",
             f"Machine: {m.get('device')} ({m.get('cpu')}), torch {m.get('torch')}, Python "
             f"{m.get('python')}, commit {m.get('commit')}; load average at the last write "
             f"{m.get('load_average')} (other sessions share the 2 cores: times are upper "
             f"bounds). Written by `python benchmarks/images.py` (see its docstring).", ""]
    digits = report.get("digits")
    if digits:
        lines += ["## Conditional digits from a folder of 32x32 PNGs", "",
                  "Each class generated on request (200 samples each from the final generator) "
                  "and judged by the digits classifier (share of class k's samples it puts in "
                  "class k with probability >= 0.5). Recipes: "
                  + "; ".join(f"{k}: `{' '.join(v)}`" for k, v in digits["recipes"].items())
                  + ", each with `--images DIR --conditional --seed S --threads 1`.", "",
                  "| model | seed | classes recognised (>= 50%) | mean per-class accuracy | "
                  "worst class | Frechet (classifier features) | train s | real images/s |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in digits["rows"]:
            worst = int(np.argmin([a if a is not None else 2 for a in r["class_accuracy"]]))
            lines.append(f"| {r['model']} | {r['seed']} | {r['classes_recognised']}/10 | "
                         f"{_fmt_pct(r['mean_class_accuracy'])} | "
                         f"{worst}: {_fmt_pct(r['worst_class_accuracy'])} | "
                         f"{r['frechet_distance']:.2f} | {r['train_seconds']:.0f} | "
                         f"{r['real_images_per_second']:.0f} |")
        for model in sorted({r["model"] for r in digits["rows"]}):
            rs = [r for r in digits["rows"] if r["model"] == model]
            acc = [r["mean_class_accuracy"] for r in rs]
            lines.append(f"| **{model}: median [worst]** | {len(rs)} seeds | "
                         f"{min(r['classes_recognised'] for r in rs)}/10 at worst | "
                         f"{_fmt_pct(statistics.median(acc))} [{_fmt_pct(min(acc))}] | | "
                         f"{statistics.median(r['frechet_distance'] for r in rs):.2f} | "
                         f"{statistics.median(r['train_seconds'] for r in rs):.0f} | |")
        real = digits["rows"][0]
        lines += ["", f"Frechet distance between two halves of the real digits: "
                      f"{real['frechet_distance_real_halves']:.2f}; classifier held-out "
                      f"accuracy {_fmt_pct(real['classifier_test_accuracy'])}.", "",
                  "Per-class accuracy of each run (classes 0-9):", ""]
        for r in digits["rows"]:
            lines.append(f"- {r['model']} seed {r['seed']}: "
                         + ", ".join(f"{100 * a:.0f}" for a in r["class_accuracy"]))
        lines.append("")
    throughput = report.get("throughput")
    if throughput:
        rows = throughput["decode"]
        lines += ["## Decoding throughput of the folder path", "",
                  "`load_image_folder` from nothing (headers, decode, write the uint8 cache) "
                  "into a fresh cache folder, with 1 and 2 decoding threads "
                  "(`--decode-workers`).", "",
                  "| folder | threads | images/s, median [min-max] | repeats |",
                  "| --- | --- | --- | --- |"]
        for r in rows:
            lines.append(f"| {r['folder']} | {r['workers']} | "
                         f"{r['images_per_second_median']:.0f} "
                         f"[{r['images_per_second_min']:.0f}-{r['images_per_second_max']:.0f}]"
                         f" | {r['repeats']} |")
        eat = throughput["trainer"]
        lines += ["", "The trainer's appetite at 32x32 in the same conditions (real images "
                      "drawn per second, n_critic x batch per generator step, 20 steps of each "
                      "digits recipe after a warm-up step, one thread): "
                  + ", ".join(f"{m} {v['real_images_per_second']:.0f}/s "
                              f"({v['seconds_per_step']:.2f} s a step)" for m, v in eat.items())
                  + ". Decoding with one thread outpaces it many times over, and it is done "
                    "once, before training: every later run, and every step, reads the "
                    "memory-mapped cache.", ""]
    mem = report.get("memory")
    if mem:
        lines += ["## Peak memory of a 50k x 32x32x3 folder run", "",
                  f"{mem['images']} PNGs (uint8 pixels: {mem['uint8_mb']:.1f} MB; the limit, "
                  f"twice that: {mem['limit_mb']:.1f} MB beyond the ring8 run). Peak resident "
                  f"memory of each process (wait4's ru_maxrss), 3 steps each.", "",
                  "| run | peak RSS MB | beyond ring8 MB | wall s |", "| --- | --- | --- | --- |"]
        for name, r in mem["runs"].items():
            lines.append(f"| {name} | {r['peak_rss_mb']:.1f} | {r['beyond_ring8_mb']:.1f} | "
                         f"{r['wall_seconds']} |")
        worst = max(r["beyond_ring8_mb"] for r in mem["runs"].values())
        lines += ["", f"Largest excess over the ring8 run: {worst:.1f} MB, "
                      f"{'below' if worst < mem['limit_mb'] else 'ABOVE'} the limit of "
                      f"{mem['limit_mb']:.1f} MB ({worst / mem['uint8_mb']:.2f}x the set's "
                      f"uint8 pixels)."]
        if mem.get("stages"):
            lines += ["", "Peak RSS of one process after each stage of a first run (same "
                          "settings, in-process): "
                      + "; ".join(f"{k} {v:.0f} MB" for k, v in mem["stages"].items())
                      + ". Decoding writes every pixel once through the memory map (the pages "
                        "count while mapped); the end-of-run metrics and samples (2500 "
                        "generated images as float copies, sliced W1 against 2500 real ones) "
                        "make the rest of the peak."]
        lines += ["", "Commands: " + "; ".join(f"`{r['command']}`"
                                              for r in mem["runs"].values()), ""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("part", choices=("digits", "throughput", "memory", "all", "report", "judge",
                                    "stages", "appetite"))
    p.add_argument("run", nargs="?", help="judge: the run folder whose checkpoint to judge; "
                                          "stages: the image folder; appetite: the model")
    p.add_argument("--jobs", type=int, default=1, help="digits runs at once (default 1)")
    p.add_argument("--work", default=str(ROOT / "runs" / "images-bench"),
                   help="folder for the PNGs, caches and runs (default runs/images-bench)")
    p.add_argument("--models", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--n", type=int, default=50_000, help="images of the memory run's folder")
    p.add_argument("--date", default=_stamp(), help="the report's date stamp (yyyymmdd)")
    p.add_argument("--results", default=str(RESULTS), help="the report's folder")
    args = p.parse_args(argv)
    globals()["RESULTS"] = Path(args.results)
    if args.part == "judge":
        print(json.dumps(judge(Path(args.run))))
        return 0
    if args.part == "appetite":
        print(json.dumps(appetite(args.run, Path(args.work))))
        return 0
    if args.part == "stages":
        print(json.dumps(rss_stages(Path(args.run), Path(args.work))))
        return 0
    Path(args.work).mkdir(parents=True, exist_ok=True)
    if args.part in ("digits", "all"):
        run_digits(args)
    if args.part in ("memory", "all"):
        run_memory(args)
    if args.part in ("throughput", "all"):
        run_throughput(args)
    if args.part == "report":
        _save(args.date, "machine", _load(args.date).get("machine", {}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
