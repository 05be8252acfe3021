"""Wall time of a CTGAN training epoch with CTGAN's own gradient penalty and with wgangp_fast's.

One seeded `CTGAN.fit` on a fixed table; the patch is switched on and off between epochs (order
A B B A, repeated, after one warm-up epoch of each), so both arms see the same data, model sizes,
machine load and warm caches. Each epoch is timed from the start of its first step to the end of
its bookkeeping. Prints a table and writes benchmarks/results/ctgan-epoch-<device>-<date>.md.

    python benchmarks/ctgan_epoch.py                      # CPU, CTGAN defaults, ~2 minutes
    python benchmarks/ctgan_epoch.py --device cuda --rounds 8

The table: 5000 rows resampled (with 1% jitter) from scikit-learn's breast-cancer data, ten
measurements plus the diagnosis and a derived size band as categories. CTGAN's defaults otherwise
(batch 500, pac 10, (256, 256) networks, one discriminator step per generator step).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pandas as pd
import torch

ARMS = ("ctgan", "wgangp_fast")
COLUMNS = ["mean radius", "mean texture", "mean perimeter", "mean area", "mean smoothness",
           "mean compactness", "mean concavity", "mean concave points", "mean symmetry",
           "mean fractal dimension"]


def breast_cancer_table(rows: int, seed: int) -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    base = bunch.frame[COLUMNS]
    rng = np.random.RandomState(seed)
    idx = rng.randint(0, len(base), size=rows)
    values = base.to_numpy()[idx]
    values = values * (1 + 0.01 * rng.standard_normal(values.shape))
    df = pd.DataFrame(values, columns=COLUMNS)
    df["diagnosis"] = [str(bunch.target_names[t]) for t in bunch.target.to_numpy()[idx]]
    df["size_band"] = pd.qcut(df["mean area"], 4, labels=["s", "m", "l", "xl"]).astype(str)
    return df


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device).replace(" ", "-")
    return f"cpu-{os.cpu_count()}cores"


class EpochClock:
    """Stands in for CTGAN's `tqdm(range(epochs))`: switches the arm and times each epoch."""

    def __init__(self, schedule: List[str], device: torch.device, backend: str):
        self.schedule = schedule
        self.device = device
        self.backend = backend
        self.times: List[Tuple[str, float]] = []

    def __call__(self, iterable, *args, **kwargs):
        if len(iterable) != len(self.schedule):
            raise RuntimeError(f"CTGAN asked for {len(iterable)} epochs, the schedule has "
                               f"{len(self.schedule)}")
        return self

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _use(self, arm: str | None) -> None:
        from wgangp_fast.integrations import ctgan as wgf_ctgan

        if arm == "wgangp_fast" and not wgf_ctgan.is_patched():
            wgf_ctgan.patch(backend=self.backend, verify=False)
        elif arm != "wgangp_fast" and wgf_ctgan.is_patched():
            wgf_ctgan.unpatch()

    def __iter__(self):
        try:
            for epoch, arm in enumerate(self.schedule):
                self._use(arm)
                self._sync()
                start = time.perf_counter()
                yield epoch
                self._sync()
                self.times.append((arm, time.perf_counter() - start))
        finally:
            self._use(None)

    def set_description(self, *args, **kwargs) -> None:
        pass


def quantile(values: List[float], q: float) -> float:
    return float(np.quantile(np.asarray(values), q))


def run(args) -> Dict:
    import ctgan
    import ctgan.synthesizers.ctgan as ctgan_module

    import wgangp_fast
    from wgangp_fast import backends

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    if args.threads:
        torch.set_num_threads(args.threads)
    schedule = list(ARMS) * args.warmup + ["ctgan", "wgangp_fast", "wgangp_fast", "ctgan"] * \
        args.rounds
    data = breast_cancer_table(args.rows, args.seed)
    model = ctgan.CTGAN(batch_size=args.batch_size, pac=args.pac, epochs=len(schedule),
                        enable_gpu=device.type == "cuda")
    model.set_random_state(args.seed)
    clock = EpochClock(schedule, device, args.backend)
    saved_tqdm = ctgan_module.tqdm
    ctgan_module.tqdm = clock
    load_before = os.getloadavg()
    wall = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model.fit(data, discrete_columns=["diagnosis", "size_band"])
    finally:
        ctgan_module.tqdm = saved_tqdm
    wall = time.perf_counter() - wall
    measured = clock.times[2 * args.warmup:]
    stats = {}
    for arm in ARMS:
        t = [s for a, s in measured if a == arm]
        stats[arm] = {"n": len(t), "median": statistics.median(t), "p20": quantile(t, 0.2),
                      "p80": quantile(t, 0.8)}
    transformer = model._transformer
    return {
        "stats": stats,
        "device": device_label(device),
        "date": datetime.date.today().strftime("%Y%m%d"),
        "steps": max(args.rows // args.batch_size, 1),
        "data_dim": transformer.output_dimensions,
        "cond_dim": model._data_sampler.dim_cond_vec(),
        "backend": backends.resolve(args.backend, device),
        "threads": torch.get_num_threads(),
        "wall": wall,
        "load": (load_before, os.getloadavg()),
        "versions": f"torch {torch.__version__}, ctgan {ctgan.__version__}, wgangp_fast "
                    f"{wgangp_fast.__version__}, Python {platform.python_version()}",
    }


def table(result: Dict, args) -> str:
    s = result["stats"]
    base = s["ctgan"]["median"]
    lines = ["| penalty | epochs timed | median s/epoch | p20 | p80 | ms/step | speedup |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for arm in ARMS:
        r = s[arm]
        lines.append(f"| {arm} | {r['n']} | {r['median']:.3f} | {r['p20']:.3f} | "
                     f"{r['p80']:.3f} | {1000 * r['median'] / result['steps']:.1f} | "
                     f"{base / r['median']:.3f}x |")
    return "\n".join(lines)


def report(result: Dict, args) -> str:
    (b1, b5, b15), (a1, a5, a15) = result["load"]
    return "\n".join([
        f"# CTGAN epoch time, {result['device']}, {result['date']}",
        "",
        f"Command: `python {' '.join(sys.argv)}`",
        "",
        f"- Table: {args.rows} rows x 12 columns (10 continuous, 2 categorical) from scikit-learn's "
        f"breast-cancer data; transformed width {result['data_dim']} + condition "
        f"{result['cond_dim']}",
        f"- CTGAN defaults: batch {args.batch_size}, pac {args.pac}, (256, 256) generator and "
        f"discriminator, 1 discriminator step; {result['steps']} steps per epoch",
        f"- One seeded fit, patch switched per epoch (A B B A x {args.rounds} after "
        f"{args.warmup} warm-up epoch(s) per arm); wgangp_fast backend `{result['backend']}`",
        f"- {result['versions']}; torch threads: {result['threads']}; whole fit "
        f"{result['wall']:.1f} s",
        f"- Load average before/after (1, 5, 15 min): {b1:.2f} {b5:.2f} {b15:.2f} / "
        f"{a1:.2f} {a5:.2f} {a15:.2f}",
        "",
        table(result, args),
        "",
    ])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--rows", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--pac", type=int, default=10)
    p.add_argument("--rounds", type=int, default=4, help="A B B A rounds timed (4 epochs each)")
    p.add_argument("--warmup", type=int, default=1, help="untimed epochs per arm first")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--backend", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = p.parse_args(argv)
    if args.batch_size % 2 or args.batch_size % args.pac:
        p.error("--batch-size must be even and a multiple of --pac")
    if args.rounds < 1 or args.warmup < 0:
        p.error("--rounds must be >= 1 and --warmup >= 0")
    result = run(args)
    text = report(result, args)
    print(text)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"ctgan-epoch-{result['device']}-{result['date']}.md"
    out.write_text(text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
