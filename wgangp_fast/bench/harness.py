"""The benchmarks' measuring tools: the machine, timers, memory, the CSV schema.

Every results file has one header (README, "Benchmarks"), plus `setup_s`: the seconds a
step mode spends before its first timed call (torch.compile, CUDA-graph warm-up and capture).
Timing runs the variants of a comparison in rounds (in alternating order, so slow drifts of a
shared machine hit all variants alike) until a minimum number of rounds and a time budget are
reached; median and 20th/80th percentiles. On a GPU each call is timed with CUDA events and
followed by torch.cuda.synchronize(). Peak memory is what one call allocates beyond its inputs,
from a separate, untimed call.
"""

from __future__ import annotations

import csv
import ctypes
import datetime as _dt
import math
import os
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter, thread_time
from typing import Callable, Dict, List, Sequence, Tuple

import torch

from ..backends import BACKENDS

HEADER = ("device,date,kind,name,backend,dtype,size_bytes,median_ms,p20_ms,p80_ms,gbps,"
          "copy_gbps,peak_mem_mb,torch,triton,setup_s").split(",")
# results written before the step modes had no setup_s column
_OLD_HEADER = HEADER[:-1]
OP_NAMES = ("interpolate", "penalty_forward", "penalty_backward", "roundtrip")

# Necessary bytes moved per element, in units of the element size: what the op must read and
# write once each (README, "How it works").
OP_TRAFFIC = {"interpolate": 3, "penalty_forward": 1, "penalty_backward": 2, "roundtrip": 6}
# the step variants, in table order: the reference step, the drop-in in the same loop, the
# whole-step modes of wgangp_fast.steps, and the step without any penalty
STEP_MODES = ("eager", "compile", "graph", "compile+graph")
STEP_BACKENDS = ("reference", "wgangp_fast", "no_penalty")
STEP_VARIANTS = ("reference", "wgangp_fast") + STEP_MODES + ("no_penalty",)
LAMBDA_GP = 10.0

MIB = 1 << 20

# Tabular: CTGAN packs pac=10 rows; 50 columns give 500-element groups ("a few hundred").
TABULAR_PAC, TABULAR_D = 10, 50

IMAGE_N = 64

SHAPES = ("tabular", "image")

SHAPE_SUFFIX = {"tabular": "", "image": "@image"}

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "float64": torch.float64}

AUTOCAST_SUFFIX = "-autocast"
CRITICS = ("mlp28", "ctgan", "conv32", "conv64")
# a whole training iteration (n_critic critic steps and a generator step) of a critic's GAN
ITERATION_SUFFIX = "-iteration"


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu-{os.cpu_count() or 1}cores"

def file_stem(device_name: str, day: _dt.date) -> str:
    """`<device>-<yyyymmdd>` with the device name made safe for a file name."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", device_name).strip("-") or "device"
    return f"{safe}-{day.strftime('%Y%m%d')}"

def triton_version() -> str:
    try:
        import triton
    except ImportError:
        return ""
    return str(getattr(triton, "__version__", ""))

def _cache_bytes(device: torch.device) -> int:
    """Size of the last-level cache the op inputs must not fit in."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        # H100/H200 have 50 MB of L2; the inputs of a rotation total at least twice that.
        return max(int(getattr(props, "L2_cache_size", 0) or 0), 50 * 10**6)
    size = 0
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip()
        except OSError:
            continue
        m = re.fullmatch(r"(\d+)([KMG]?)", text)
        if m:
            size = max(size, int(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20,
                                                "G": 1 << 30}[m.group(2)])
    return max(size, 32 * MIB)

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------
# Memory: what one call allocates beyond what is already there
# ---------------------------------------------------------------------------------------------


def _proc_status_kb(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+)\s*kB", text, re.MULTILINE)
    return int(m.group(1)) if m else None

def _reset_peak_rss() -> bool:
    """Linux: reset VmHWM to the current RSS ('5' to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True

def _trim_heap() -> None:
    # Freed heap memory that glibc keeps would be reused without raising the RSS: give it back so
    # the peak counts every page the call touches.
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass

def peak_memory_mb(fn: Callable[[int], object], device: torch.device) -> float:
    """Peak memory of one call of fn(0) beyond what was allocated before it, in MiB.

    GPU: torch.cuda.max_memory_allocated. CPU: the growth of the resident set (VmHWM after a
    reset; where that is unavailable, ru_maxrss, a whole-process peak).
    """
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn(0)
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / MIB
    _trim_heap()
    if _reset_peak_rss():
        base = _proc_status_kb("VmRSS")
        fn(0)
        peak = _proc_status_kb("VmHWM")
        if base is not None and peak is not None:
            return max(peak - base, 0) / 1024
    import resource

    fn(0)
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MIB


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------


@dataclass
class Budget:
    warmup: int
    min_rounds: int
    max_rounds: int
    seconds: float
    # "wall": elapsed time (CUDA events on a GPU). "cpu": CPU time of the calling thread, for a
    # shared machine; only meaningful with one thread, which then runs every op and the backward.
    clock: str = "wall"

def _time_call(fn: Callable[[int], object], k: int, device: torch.device,
               clock: str = "wall") -> float:
    """Seconds of one call fn(k); its result is dropped inside the timed region."""
    if device.type == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        synchronize(device)
        start.record()
        fn(k)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    if clock == "cpu":
        t0 = thread_time()
        fn(k)
        return thread_time() - t0
    t0 = perf_counter()
    fn(k)
    return perf_counter() - t0

def measure(cases: Dict[str, Callable[[int], object]], device: torch.device, budget: Budget,
            peaks: Dict[str, float] | None = None) -> Dict[str, List[float]]:
    """Seconds per call of every case, interleaved round by round. fn(k) gets the call index.

    With a `peaks` dict, also fills in each case's peak memory (peak_memory_mb), measured after
    the warm-up so that one-time allocations (cuBLAS workspaces, Triton compiles) are not counted.
    """
    names = list(cases)
    for k in range(budget.warmup):
        for name in names:
            cases[name](k)
    synchronize(device)
    if peaks is not None:
        for name in names:
            peaks[name] = peak_memory_mb(cases[name], device)
    samples: Dict[str, List[float]] = {name: [] for name in names}
    start = perf_counter()
    rounds = 0
    while True:
        order = names if rounds % 2 == 0 else names[::-1]
        for name in order:
            samples[name].append(_time_call(cases[name], budget.warmup + rounds, device,
                                            budget.clock))
        rounds += 1
        if rounds >= budget.max_rounds:
            break
        if rounds >= budget.min_rounds and perf_counter() - start >= budget.seconds:
            break
    return samples

def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), q in [0, 100]."""
    xs = sorted(values)
    if not xs:
        raise ValueError("percentile of no values")
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)

def summary_ms(samples: Sequence[float]) -> Tuple[float, float, float]:
    return (percentile(samples, 50) * 1e3, percentile(samples, 20) * 1e3,
            percentile(samples, 80) * 1e3)

def paired_ratio(a: Sequence[float], b: Sequence[float]) -> Tuple[float, float, float]:
    """Median of the per-round ratios a[k] / b[k] (both timed in round k, so a slow spell of the
    machine hits both) and a distribution-free 95% confidence interval for it: the order
    statistics at ranks n/2 -+ 0.98 sqrt(n) (normal approximation to the binomial)."""
    ratios = sorted(x / y for x, y in zip(a, b))
    n = len(ratios)
    half = 0.98 * math.sqrt(n)
    lo = max(0, int(math.floor(n / 2 - half)))
    hi = min(n - 1, int(math.ceil(n / 2 + half)))
    return statistics.median(ratios), ratios[lo], ratios[hi]


# ---------------------------------------------------------------------------------------------
# Rows and the CSV
# ---------------------------------------------------------------------------------------------


@dataclass
class Meta:
    device: str
    date: str
    torch: str
    triton: str



def _row(meta: Meta, kind: str, name: str, backend: str, dtype: str, size_bytes: int,
         stats: Tuple[float, float, float], gbps: float | None, copy_gbps: float | None,
         peak_mb: float, setup_s: float | None = None) -> Dict[str, str]:
    med, p20, p80 = stats
    return {
        "device": meta.device, "date": meta.date, "kind": kind, "name": name,
        "backend": backend, "dtype": dtype, "size_bytes": str(size_bytes),
        "median_ms": f"{med:.4f}", "p20_ms": f"{p20:.4f}", "p80_ms": f"{p80:.4f}",
        "gbps": "" if gbps is None else f"{gbps:.3f}",
        "copy_gbps": "" if copy_gbps is None else f"{copy_gbps:.3f}",
        "peak_mem_mb": f"{peak_mb:.2f}", "torch": meta.torch, "triton": meta.triton,
        "setup_s": "" if setup_s is None else f"{setup_s:.3f}",
    }


ROW_KEY = ("kind", "name", "backend", "dtype", "size_bytes")

def _dtype_rank(label: str) -> Tuple[int, str]:
    """float32 first, then the order of DTYPES; autocast rows next to their dtype."""
    base = label[:-len(AUTOCAST_SUFFIX)] if label.endswith(AUTOCAST_SUFFIX) else label
    names = list(DTYPES)
    return (names.index(base) if base in names else len(names), label)

def _op_base(name: str) -> Tuple[str, str]:
    base, _, shape = name.partition("@")
    return base, shape or "tabular"



def read_csv(path: Path) -> List[Dict[str, str]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames not in (HEADER, _OLD_HEADER):
            raise ValueError(f"{path}: header {reader.fieldnames} is not the benchmark schema "
                             f"{HEADER}")
        return [{**row, "setup_s": row.get("setup_s") or ""} for row in reader]


def merge_rows(old: Sequence[Dict[str, str]], new: Sequence[Dict[str, str]]) -> List[Dict[str, str]]:
    """old rows with the same kind/name/backend/dtype/size as a new row replaced by it."""
    merged = {tuple(r[k] for k in ROW_KEY): r for r in old}
    for r in new:
        merged[tuple(r[k] for k in ROW_KEY)] = r
    kind_order = {"op": 0, "step": 1}
    name_order = {n: i for i, n in enumerate(OP_NAMES + CRITICS + tuple(
        c + ITERATION_SUFFIX for c in CRITICS))}
    backend_order = {b: i for i, b in enumerate(BACKENDS + STEP_VARIANTS)}

    def order(r):
        base, shape = _op_base(r["name"]) if r["kind"] == "op" else (r["name"], "")
        return (kind_order.get(r["kind"], 2), SHAPES.index(shape) if shape in SHAPES else -1,
                _dtype_rank(r["dtype"]), int(r["size_bytes"]), name_order.get(base, 99), base,
                backend_order.get(r["backend"], 99))

    return sorted(merged.values(), key=order)


def write_csv(path: Path, rows: Sequence[Dict[str, str]]) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HEADER, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
