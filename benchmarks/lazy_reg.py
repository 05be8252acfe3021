"""Amortised critic-step time with lazy regularisation (`--gp-every k`, StyleGAN2's trick).

With k > 1 the trainer computes the gradient penalty (an extra critic forward, a create_graph
backward and the double backward) on every k-th critic step only, weighted by k. This benchmark
times blocks of critic steps of the real trainer (`WGANGPTrainer._critic_step`, data sampling and
the generator's no-grad forward included) for each k, interleaved round by round (the order rotates)
so every k sees the same machine load, and reports the time per critic step: median and p20/p80
over the blocks. A block holds a multiple of every k, so each block has the same share of penalty
steps as a long run.

    python benchmarks/lazy_reg.py                       # CPU, digits (8x8) with an MLP critic
    python benchmarks/lazy_reg.py --device cuda --dataset digits --batch 256 --rounds 40

Prints a markdown table and writes benchmarks/results/lazy-reg-<device>-<date>.md.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from wgangp_fast.train import WGANGPConfig, WGANGPTrainer

RESULTS = Path(__file__).resolve().parent / "results"


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device).replace(" ", "-")
    return f"cpu-{os.cpu_count() or 1}cores"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_blocks(trainers: Dict[int, WGANGPTrainer], block: int, rounds: int,
                warmup: int) -> Dict[int, List[float]]:
    """ms per critic step of each block, per k; the order of k rotates every round."""
    ks = sorted(trainers)
    out: Dict[int, List[float]] = {k: [] for k in ks}
    for r in range(warmup + rounds):
        order = ks[r % len(ks):] + ks[:r % len(ks)]
        for k in order:
            t = trainers[k]
            _sync(t.device)
            start = time.perf_counter()
            for _ in range(block):
                t._critic_step(t.sampler.next())
            _sync(t.device)
            if r >= warmup:
                out[k].append((time.perf_counter() - start) * 1e3 / block)
    return out


def quantile(values: List[float], q: float) -> float:
    return float(np.quantile(np.asarray(values), q))


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--hidden-dim", type=int, default=256)
    p.add_argument("--method", default="gp")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--rounds", type=int, default=12, help="timed blocks per k")
    p.add_argument("--warmup", type=int, default=2, help="untimed blocks per k")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", default=None, help="results file (default: results/lazy-reg-...md)")
    args = p.parse_args(argv)
    if any(k < 1 for k in args.ks):
        p.error("--ks: every k must be >= 1")
    torch.set_num_threads(args.threads)

    block = math.lcm(*args.ks)
    block = max(block, 16)
    trainers = {}
    for k in args.ks:
        cfg = WGANGPConfig.for_dataset(args.dataset, batch_size=args.batch,
                                       hidden_dim=args.hidden_dim, method=args.method,
                                       precision=args.precision, gp_every=k, device=args.device,
                                       steps=1, seed=0)
        trainers[k] = WGANGPTrainer(cfg)
    device = trainers[args.ks[0]].device
    started = time.perf_counter()
    times = time_blocks(trainers, block, args.rounds, args.warmup)
    wall = time.perf_counter() - started

    label = device_label(device)
    date = datetime.date.today().strftime("%Y%m%d")
    t0 = trainers[args.ks[0]]
    base = statistics.median(times[min(args.ks)])
    cmd = "python benchmarks/lazy_reg.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        f"# Lazy regularisation: critic-step time, {label}, {date}",
        "",
        f"Command: `{cmd.strip()}`",
        "",
        f"- dataset {args.dataset}, {t0.model_kind} critic (hidden {args.hidden_dim}), batch "
        f"{args.batch}, method {args.method}, precision {args.precision}, device {device}",
        f"- blocks of {block} critic steps (data sampling and the generator's forward included), "
        f"{args.rounds} timed + {args.warmup} warm-up per k, k order rotating per round; "
        f"{wall:.1f} s in all",
        f"- torch {torch.__version__}, Python {platform.python_version()}, torch threads "
        f"{torch.get_num_threads()}",
        "",
        "| gp every k | penalty steps | median ms / critic step | p20 | p80 | speedup vs k=1 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for k in args.ks:
        med = statistics.median(times[k])
        lines.append(f"| {k} | 1/{k} | {med:.3f} | {quantile(times[k], 0.2):.3f} | "
                     f"{quantile(times[k], 0.8):.3f} | {base / med:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    path = Path(args.out) if args.out else RESULTS / f"lazy-reg-{label}-{date}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
