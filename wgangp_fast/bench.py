"""Benchmarks of the fused ops and of whole critic steps: `wgangp-fast bench` and
`python benchmarks/run.py` (a thin wrapper over `main`).

Two suites, one CSV schema (DESIGN.md, "Benchmark results"):

- ops: `interpolate`, `penalty_forward`, `penalty_backward` and `roundtrip` (the three in
  sequence) for every backend that runs on the device, against `reference`: the eager formulas of
  CTGAN's `calc_gradient_penalty` (seed 000), which is what users run today. Two shapes:
  tabular ([N, 50], pac=10: 500-element groups; name `interpolate`, ...) and image-like
  ([64, D], pac=1: one group per sample, D up to millions; name `interpolate@image`, ...).
  GB/s counts the necessary traffic of DESIGN.md ("What the bytes say"): 3b per element for
  interpolate, b for the penalty forward, 2b for its backward, 6b for the round trip; it is
  compared with a device-to-device copy (read b + write b per element) measured in the same run.
- steps: one critic step (forward on real and on fake, penalty, backward, optimizer step) with
  the seed code's penalty (`reference`), with `wgangp_fast.gradient_penalty` as a drop-in in the
  same loop (`wgangp_fast`) and without any penalty (`no_penalty`).

Timing: warm-up calls, then rounds that call every variant of a comparison once each (in
alternating order, so slow drifts of a shared machine hit all variants alike) until a minimum
number of rounds and a time budget are reached; median and 20th/80th percentiles. On a GPU each
call is timed with CUDA events and followed by torch.cuda.synchronize(). Op inputs are rotated
over several sets whose total is at least twice the last-level cache, so no call finds its
inputs in cache. Peak memory is what one call allocates beyond its inputs, from a separate,
untimed call.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import ctypes
import datetime as _dt
import importlib.util
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

from . import reference
from .backends import BACKENDS, resolve
from .ops import gradient_norm_penalty, interpolate
from .penalty import gradient_penalty

HEADER = ("device,date,kind,name,backend,dtype,size_bytes,median_ms,p20_ms,p80_ms,gbps,"
          "copy_gbps,peak_mem_mb,torch,triton").split(",")
OP_NAMES = ("interpolate", "penalty_forward", "penalty_backward", "roundtrip")
# Necessary bytes moved per element, in units of the element size (DESIGN.md).
OP_TRAFFIC = {"interpolate": 3, "penalty_forward": 1, "penalty_backward": 2, "roundtrip": 6}
STEP_BACKENDS = ("reference", "wgangp_fast", "no_penalty")
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


@dataclass(frozen=True)
class CriticSpec:
    name: str
    build: Callable[[], torch.nn.Module]
    in_shape: Tuple[int, ...]
    batch: int
    pac: int


def critic_specs() -> Dict[str, CriticSpec]:
    """The step-benchmark critics (imported lazily: models.py is only needed by this suite)."""
    from .models import ConvCritic, MLPCritic, PacCritic

    return {
        "mlp28": CriticSpec("mlp28", lambda: MLPCritic(in_shape=(1, 28, 28)), (1, 28, 28), 64, 1),
        "ctgan": CriticSpec("ctgan", lambda: PacCritic(150, pac=10), (150,), 500, 10),
        "conv32": CriticSpec("conv32", lambda: ConvCritic(channels=1, image_size=32),
                             (1, 32, 32), 64, 1),
        "conv64": CriticSpec("conv64", lambda: ConvCritic(channels=3, image_size=64),
                             (3, 64, 64), 64, 1),
    }


CRITICS = ("mlp28", "ctgan", "conv32", "conv64")

# ---------------------------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Op suite
# ---------------------------------------------------------------------------------------------


def op_geometry(shape: str, size_bytes: int, dtype: torch.dtype) -> Tuple[int, int, int]:
    """(N, D, pac) of an [N, D] batch of about size_bytes bytes."""
    elems = max(1, size_bytes // torch.empty((), dtype=dtype).element_size())
    if shape == "tabular":
        groups = max(1, round(elems / (TABULAR_PAC * TABULAR_D)))
        return groups * TABULAR_PAC, TABULAR_D, TABULAR_PAC
    if shape == "image":
        return IMAGE_N, max(1, elems // IMAGE_N), 1
    raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")


@dataclass
class OpInputs:
    real: torch.Tensor
    fake: torch.Tensor
    grads: torch.Tensor
    scratch: torch.Tensor


def make_op_inputs(n: int, d: int, dtype: torch.dtype, device: torch.device, sets: int,
                   seed: int = 0) -> List[OpInputs]:
    gen = torch.Generator(device=device).manual_seed(seed)
    out = []
    for _ in range(sets):
        def draw():
            return torch.randn(n, d, generator=gen, device=device, dtype=torch.float32).to(dtype)

        grads = draw().requires_grad_(True)
        out.append(OpInputs(draw(), draw(), grads, torch.empty(n, d, dtype=dtype, device=device)))
    return out


def rotation_sets(set_bytes: int, device: torch.device) -> int:
    """Input sets to cycle so that they total at least twice the last-level cache."""
    need = math.ceil(2 * _cache_bytes(device) / max(set_bytes, 1))
    return int(min(max(need, 2), 64))


def seed_interpolate(real: torch.Tensor, fake: torch.Tensor, pac: int) -> torch.Tensor:
    """seed 000: CTGAN's alpha expand/view and alpha * real + (1 - alpha) * fake.

    alpha is drawn in the data's dtype so that low-precision rows write what the fused op writes.
    """
    batch, d = real.size(0) // pac, real.size(1)
    alpha = torch.rand(batch, 1, device=real.device, dtype=real.dtype)
    alpha = alpha.expand(batch, d)
    if pac > 1:
        alpha = alpha.unsqueeze(1).expand(batch, pac, d)
        alpha = alpha.contiguous().view(-1, d)
    return alpha * real + (1 - alpha) * fake


def seed_penalty(grads: torch.Tensor, pac: int) -> torch.Tensor:
    """seed 000: the group norms over view(-1, pac * D) and ((n - 1) ** 2).mean(), times lambda."""
    norm = grads.view(-1, pac * grads.size(1)).norm(2, dim=1)
    return ((norm - 1) ** 2).mean() * LAMBDA_GP


def op_functions(backend: str, pac: int):
    """(interpolate, penalty) callables of a backend; `reference` is the eager seed code."""
    if backend == "reference":
        return (lambda real, fake: seed_interpolate(real, fake, pac),
                lambda grads: seed_penalty(grads, pac))
    return (lambda real, fake: interpolate(real, fake, pac=pac, backend=backend),
            lambda grads: gradient_norm_penalty(grads, pac=pac, scale=LAMBDA_GP, backend=backend))


def op_case(name: str, backend: str, sets: List[OpInputs], pac: int) -> Callable[[int], object]:
    """fn(k) running op `name` of `backend` on input set k % len(sets)."""
    interp, penalty = op_functions(backend, pac)
    if name == "interpolate":
        return lambda k: interp(sets[k % len(sets)].real, sets[k % len(sets)].fake)
    if name == "penalty_forward":
        return lambda k: penalty(sets[k % len(sets)].grads)
    if name == "penalty_backward":
        # One graph per set, built outside the timed region and kept for repeated backwards.
        graphs = [penalty(s.grads) for s in sets]

        def backward(k):
            i = k % len(sets)
            return torch.autograd.grad(graphs[i], sets[i].grads, retain_graph=True)

        return backward
    if name == "roundtrip":
        def roundtrip(k):
            s = sets[k % len(sets)]
            x_hat = interp(s.real, s.fake)
            pen = penalty(s.grads)
            (d_grads,) = torch.autograd.grad(pen, s.grads)
            return x_hat, d_grads

        return roundtrip
    raise ValueError(f"op name must be one of {OP_NAMES}, got {name!r}")


def copy_case(sets: List[OpInputs]) -> Callable[[int], object]:
    def copy(k):
        s = sets[k % len(sets)]
        with torch.no_grad():
            s.scratch.copy_(s.real)

    return copy


def _probe(backend: str, device: torch.device) -> None:
    sets = make_op_inputs(2 * TABULAR_PAC, 3, torch.float32, device, 1)
    op_case("roundtrip", backend, sets, TABULAR_PAC)(0)
    synchronize(device)


def op_backends(device: torch.device, failures: list[str] | None = None) -> List[str]:
    """The fused backends that run on `device`, then `reference` (the eager seed code).

    Each is tried on a tiny batch first; with a `failures` list, one that fails is left out and
    described there (so one broken backend does not lose a whole benchmark run), else it raises.
    """
    order = ("cuda", "triton") if device.type == "cuda" else ("cpu",)
    usable = []
    for name in order:
        try:
            resolve(name, device)
        except RuntimeError:
            continue
        try:
            _probe(name, device)
        except Exception as err:
            if failures is None:
                raise
            failures.append(f"backend {name!r} failed on a tiny batch and is left out: "
                            f"{type(err).__name__}: {err}")
            continue
        usable.append(name)
    return usable + ["reference"]


@dataclass
class Meta:
    device: str
    date: str
    torch: str
    triton: str


def _row(meta: Meta, kind: str, name: str, backend: str, dtype: str, size_bytes: int,
         stats: Tuple[float, float, float], gbps: float | None, copy_gbps: float | None,
         peak_mb: float) -> Dict[str, str]:
    med, p20, p80 = stats
    return {
        "device": meta.device, "date": meta.date, "kind": kind, "name": name,
        "backend": backend, "dtype": dtype, "size_bytes": str(size_bytes),
        "median_ms": f"{med:.4f}", "p20_ms": f"{p20:.4f}", "p80_ms": f"{p80:.4f}",
        "gbps": "" if gbps is None else f"{gbps:.3f}",
        "copy_gbps": "" if copy_gbps is None else f"{copy_gbps:.3f}",
        "peak_mem_mb": f"{peak_mb:.2f}", "torch": meta.torch, "triton": meta.triton,
    }


def run_ops(device: torch.device, sizes_mib: Sequence[float], dtypes: Sequence[str],
            shapes: Sequence[str], names: Sequence[str], budget: Budget, meta: Meta,
            log: Callable[[str], None] = print,
            backends: Sequence[str] | None = None) -> List[Dict[str, str]]:
    rows = []
    backends = list(backends) if backends is not None else op_backends(device)
    for shape in shapes:
        for dtype_name in dtypes:
            dtype = DTYPES[dtype_name]
            for size_mib in sizes_mib:
                n, d, pac = op_geometry(shape, int(size_mib * MIB), dtype)
                elem = torch.empty((), dtype=dtype).element_size()
                nbytes = n * d * elem
                sets = make_op_inputs(n, d, dtype, device,
                                      rotation_sets(4 * nbytes, device))
                # The copy runs in every round of every op, so its median pools the same
                # moments of the machine as the ops it is compared with.
                copy_samples: List[float] = []
                results = []
                for name in names:
                    cases = {b: op_case(name, b, sets, pac) for b in backends}
                    cases["copy"] = copy_case(sets)
                    peaks: Dict[str, float] = {}
                    samples = measure(cases, device, budget, peaks)
                    copy_samples += samples.pop("copy")
                    results.append((name, samples, peaks))
                copy_gbps = 2 * nbytes / percentile(copy_samples, 50) / 1e9
                log(f"[ops] {shape} {dtype_name} [{n}, {d}] pac={pac} "
                    f"({_size_label(nbytes)}, {len(sets)} input sets): "
                    f"copy {copy_gbps:.2f} GB/s")
                for name, samples, peaks in results:
                    stats = {b: summary_ms(samples[b]) for b in backends}
                    for b in backends:
                        gbps = OP_TRAFFIC[name] * nbytes / (stats[b][0] / 1e3) / 1e9
                        rows.append(_row(meta, "op", name + SHAPE_SUFFIX[shape], b, dtype_name,
                                         nbytes, stats[b], gbps, copy_gbps, peaks[b]))
                    ref = stats["reference"][0]
                    log("    " + name.ljust(17) + "  ".join(
                        f"{b} {stats[b][0]:.3f} ms"
                        + ("" if b == "reference" else f" (x{ref / stats[b][0]:.2f})")
                        for b in backends))
                del sets
    return rows


# ---------------------------------------------------------------------------------------------
# Step suite
# ---------------------------------------------------------------------------------------------


def reference_penalty(spec: CriticSpec) -> Callable:
    """The seed code's penalty for this critic: CTGAN's for the packed critic (seed 000), the
    per-sample one of seeds 002/003 for the others."""
    if spec.pac > 1:
        return lambda critic, real, fake: reference.ctgan_gradient_penalty(
            critic, real, fake, device=real.device, pac=spec.pac, lambda_=LAMBDA_GP)
    return lambda critic, real, fake: reference.per_sample_gradient_penalty(
        critic, real, fake, lambda_gp=LAMBDA_GP)


def step_case(spec: CriticSpec, variant: str, critic: torch.nn.Module, real: torch.Tensor,
              fake: torch.Tensor, autocast_dtype: torch.dtype | None) -> Callable[[int], object]:
    """fn(k): one critic step with the seed loop's structure and the `variant` penalty."""
    opt = torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.0, 0.9))
    ref_penalty = reference_penalty(spec)
    device_type = real.device.type

    def autocast():
        if autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=autocast_dtype)

    def penalty():
        if variant == "reference":
            return ref_penalty(critic, real, fake)
        if variant == "wgangp_fast":
            return gradient_penalty(critic, real, fake, lambda_gp=LAMBDA_GP, pac=spec.pac)
        return None

    def step(k):
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = critic(fake).mean() - critic(real).mean()
            pen = penalty()
        if pen is None:
            loss.backward()
        elif spec.pac > 1:
            # CTGAN's loop (seed 000): two backward calls, the penalty's first.
            pen.backward(retain_graph=True)
            loss.backward()
        else:
            (loss + pen).backward()
        opt.step()

    return step


PAIRED_TITLE = "Critic steps of the latest steps run"


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


def run_steps(device: torch.device, critics: Sequence[str], dtypes: Sequence[str],
              budget: Budget, meta: Meta, log: Callable[[str], None] = print,
              paired: List[str] | None = None) -> List[Dict[str, str]]:
    """Step rows; with a `paired` list, also appends a line per critic and dtype with the paired
    a/b ratio and its confidence interval (paired_ratio)."""
    specs = critic_specs()
    rows = []
    for critic_name in critics:
        spec = specs[critic_name]
        for dtype_name in dtypes:
            autocast_dtype = None if dtype_name == "float32" else DTYPES[dtype_name]
            label = dtype_name if autocast_dtype is None else dtype_name + AUTOCAST_SUFFIX
            torch.manual_seed(0)
            base = spec.build().to(device)
            real = torch.randn(spec.batch, *spec.in_shape, device=device)
            fake = torch.randn(spec.batch, *spec.in_shape, device=device)
            cases = {v: step_case(spec, v, copy.deepcopy(base), real, fake, autocast_dtype)
                     for v in STEP_BACKENDS}
            peaks: Dict[str, float] = {}
            samples = measure(cases, device, budget, peaks)
            nbytes = real.numel() * real.element_size()
            med = {}
            for v in STEP_BACKENDS:
                stats = summary_ms(samples[v])
                med[v] = stats[0]
                rows.append(_row(meta, "step", critic_name, v, label, nbytes, stats, None, None,
                                 peaks[v]))
            ratio, lo, hi = paired_ratio(samples["reference"], samples["wgangp_fast"])
            log(f"[steps] {critic_name} {label} batch {spec.batch}: "
                + ", ".join(f"{v} {med[v]:.2f} ms" for v in STEP_BACKENDS)
                + f"; a/b {med['reference'] / med['wgangp_fast']:.3f}, paired {ratio:.3f} "
                  f"[{lo:.3f}, {hi:.3f}]")
            if paired is not None:
                paired.append(f"- {critic_name} {label}: paired a/b {ratio:.3f}, 95% CI "
                              f"[{lo:.3f}, {hi:.3f}] over {len(samples['reference'])} rounds.")
    return rows


# ---------------------------------------------------------------------------------------------
# CSV, markdown, chart
# ---------------------------------------------------------------------------------------------

ROW_KEY = ("kind", "name", "backend", "dtype", "size_bytes")


def _dtype_rank(label: str) -> Tuple[int, str]:
    """float32 first, then the order of DTYPES; autocast rows next to their dtype."""
    base = label[:-len(AUTOCAST_SUFFIX)] if label.endswith(AUTOCAST_SUFFIX) else label
    names = list(DTYPES)
    return (names.index(base) if base in names else len(names), label)


def read_csv(path: Path) -> List[Dict[str, str]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != HEADER:
            raise ValueError(f"{path}: header {reader.fieldnames} is not the benchmark schema "
                             f"{HEADER}")
        return list(reader)


def merge_rows(old: Sequence[Dict[str, str]], new: Sequence[Dict[str, str]]) -> List[Dict[str, str]]:
    """old rows with the same kind/name/backend/dtype/size as a new row replaced by it."""
    merged = {tuple(r[k] for k in ROW_KEY): r for r in old}
    for r in new:
        merged[tuple(r[k] for k in ROW_KEY)] = r
    kind_order = {"op": 0, "step": 1}
    name_order = {n: i for i, n in enumerate(OP_NAMES + CRITICS)}
    backend_order = {b: i for i, b in enumerate(BACKENDS + STEP_BACKENDS)}

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


def _size_label(nbytes: int) -> str:
    """About two significant digits: the tabular shape rounds to whole groups (0.999 MiB)."""
    value, unit = nbytes / MIB, "MiB"
    if value >= 1024:
        value, unit = value / 1024, "GiB"
    return f"{value:.0f} {unit}" if value >= 10 else f"{value:.2g} {unit}"


def _op_base(name: str) -> Tuple[str, str]:
    base, _, shape = name.partition("@")
    return base, shape or "tabular"


def op_speedups(rows: Sequence[Dict[str, str]]) -> List[Tuple[Dict[str, str], float]]:
    """(fused op row, reference median / its median) for every op row with a reference row."""
    ref = {(r["name"], r["dtype"], r["size_bytes"]): float(r["median_ms"])
           for r in rows if r["kind"] == "op" and r["backend"] == "reference"}
    out = []
    for r in rows:
        if r["kind"] != "op" or r["backend"] == "reference":
            continue
        key = (r["name"], r["dtype"], r["size_bytes"])
        if key in ref:
            out.append((r, ref[key] / float(r["median_ms"])))
    return out


def step_ratios(rows: Sequence[Dict[str, str]]) -> List[Dict[str, object]]:
    """Per critic and dtype: medians a (reference), b (wgangp_fast), c (no_penalty), the ratios
    a/b (speed-up of the step), b/c and a/c (overhead of the penalty), and (a-c)/(b-c) (speed-up
    of the penalty's share of the step)."""
    by = {}
    for r in rows:
        if r["kind"] == "step":
            by.setdefault((r["name"], r["dtype"], r["size_bytes"]), {})[r["backend"]] = r
    out = []
    for (name, dtype, size), group in by.items():
        if not all(v in group for v in STEP_BACKENDS):
            continue
        a, b, c = (float(group[v]["median_ms"]) for v in STEP_BACKENDS)
        share = (a - c) / (b - c) if b - c > 0 and a - c > 0 else float("nan")
        out.append({"name": name, "dtype": dtype, "size_bytes": int(size), "rows": group,
                    "a": a, "b": b, "c": c, "a/b": a / b, "b/c": b / c, "a/c": a / c,
                    "penalty_speedup": share})
    order = {c: i for i, c in enumerate(CRITICS)}
    return sorted(out, key=lambda s: (order.get(s["name"], 99), _dtype_rank(s["dtype"])))


def _fmt_ms(r: Dict[str, str]) -> str:
    return f"{float(r['median_ms']):.3f} [{float(r['p20_ms']):.3f}–{float(r['p80_ms']):.3f}]"


def markdown(rows: Sequence[Dict[str, str]], notes: Sequence[str] = ()) -> str:
    """The results as markdown: an op table per shape and a step table."""
    if not rows:
        return "(no results)\n"
    first = rows[0]
    lines = [f"# Benchmarks: {first['device']}, {first['date']}", "",
             f"torch {first['torch']}, triton {first['triton'] or '-'}."]
    lines += list(notes)
    lines.append("")
    ops = [r for r in rows if r["kind"] == "op"]
    if ops:
        lines += [
            "## Ops",
            "",
            "Times in ms: median [p20–p80]. GB/s: necessary traffic (interpolate 3b, "
            "penalty_forward b, penalty_backward 2b, roundtrip 6b per element) / median; "
            "% copy: of a device copy of the same size measured in the same run (read + write). "
            "Speed-up: the eager seed-000 code (`reference`) median / this median. Peak: memory "
            "one call allocates beyond its inputs.",
            "",
        ]
        speed = {id(r): s for r, s in op_speedups(ops)}
        for shape in SHAPES:
            shape_rows = [r for r in ops if _op_base(r["name"])[1] == shape]
            if not shape_rows:
                continue
            if shape == "tabular":
                title = (f"### Tabular: [N, {TABULAR_D}], pac={TABULAR_PAC} "
                         f"({TABULAR_PAC * TABULAR_D}-element groups)")
            else:
                title = f"### Image-like: [{IMAGE_N}, D], pac=1 (one group of D elements per sample)"
            lines += [title, "",
                      "| op | dtype | size | backend | ms | GB/s | % copy | speed-up | peak MiB |",
                      "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
            for r in shape_rows:
                gbps, copy_gbps = float(r["gbps"]), float(r["copy_gbps"])
                s = speed.get(id(r))
                lines.append(
                    f"| {_op_base(r['name'])[0]} | {r['dtype']} | "
                    f"{_size_label(int(r['size_bytes']))} | {r['backend']} | {_fmt_ms(r)} | "
                    f"{gbps:.2f} | {100 * gbps / copy_gbps:.0f}% | "
                    f"{'—' if s is None else f'{s:.2f}x'} | {float(r['peak_mem_mb']):.1f} |")
            lines.append("")
    steps = step_ratios(rows)
    if steps:
        lines += [
            "## Critic steps",
            "",
            "One critic step: forward on real and fake, penalty, backward, Adam step. "
            "a = `reference` (the seed code's penalty), b = `wgangp_fast` (gradient_penalty as a "
            "drop-in in the same loop), c = `no_penalty`. Times in ms: median [p20–p80]. "
            "a/b: speed-up of the step; b/c and a/c: step time with the penalty over without; "
            "(a-c)/(b-c): speed-up of the penalty's share of the step. Peak MiB: a / b / c.",
            "",
            "| critic | dtype | batch | a: reference | b: wgangp_fast | c: no_penalty | a/b | "
            "b/c | a/c | (a-c)/(b-c) | peak MiB |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for s in steps:
            g = s["rows"]
            share = s["penalty_speedup"]
            peaks = " / ".join(f"{float(g[v]['peak_mem_mb']):.0f}" for v in STEP_BACKENDS)
            lines.append(
                f"| {s['name']} | {s['dtype']} | {_size_label(s['size_bytes'])} | "
                f"{_fmt_ms(g['reference'])} | {_fmt_ms(g['wgangp_fast'])} | "
                f"{_fmt_ms(g['no_penalty'])} | {s['a/b']:.3f} | {s['b/c']:.3f} | "
                f"{s['a/c']:.3f} | {'—' if math.isnan(share) else f'{share:.2f}'} | {peaks} |")
        lines.append("")
    return "\n".join(lines)


def plot(rows: Sequence[Dict[str, str]], path: Path) -> bool:
    """Bar charts of the speed-ups: fused roundtrip vs reference per size, and a/b per critic.
    Returns False (and draws nothing) without matplotlib or without rows to draw."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    trips = [(r, s) for r, s in op_speedups(rows) if _op_base(r["name"])[0] == "roundtrip"]
    steps = step_ratios(rows)
    panels = int(bool(trips)) + int(bool(steps))
    if not panels:
        return False
    fig, axes = plt.subplots(1, panels, figsize=(7 * panels, 4.5), squeeze=False)
    ax_iter = iter(axes[0])
    if trips:
        ax = next(ax_iter)
        # Shapes round to whole groups, so sizes are compared by their label.
        by_label = {}
        for r, _ in trips:
            by_label.setdefault(_size_label(int(r["size_bytes"])), int(r["size_bytes"]))
        labels = sorted(by_label, key=by_label.get)
        series = sorted({(_op_base(r["name"])[1], r["dtype"], r["backend"]) for r, _ in trips})
        width = 0.8 / len(series)
        for i, key in enumerate(series):
            vals = {_size_label(int(r["size_bytes"])): s for r, s in trips
                    if (_op_base(r["name"])[1], r["dtype"], r["backend"]) == key}
            xs = [j + i * width for j, lab in enumerate(labels) if lab in vals]
            bars = ax.bar(xs, [vals[lab] for lab in labels if lab in vals], width,
                          label=" ".join(key))
            if len(series) <= 4:
                ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))])
        ax.set_xticklabels(labels)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_ylabel("speed-up vs eager reference (x)")
        ax.set_title("GP roundtrip (interpolate + penalty fwd + bwd)")
        ax.legend(fontsize=7)
    if steps:
        ax = next(ax_iter)
        labels = [f"{s['name']}\n{s['dtype']}" for s in steps]
        bars = ax.bar(range(len(steps)), [s["a/b"] for s in steps], color="tab:green")
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
        ax.set_xticks(range(len(steps)))
        ax.set_xticklabels(labels, fontsize=8)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_ylabel("step speed-up a/b (x)")
        ax.set_title("critic step: reference / wgangp_fast")
    fig.suptitle(f"{rows[0]['device']} {rows[0]['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _budget(device: torch.device, kind: str, quick: bool, repeats: int | None,
            clock: str = "wall") -> Budget:
    if kind == "ops":
        b = Budget(3, 10, 200, 0.5) if device.type == "cuda" else Budget(2, 5, 40, 1.0)
    else:
        b = Budget(3, 10, 100, 2.0) if device.type == "cuda" else Budget(2, 10, 200, 15.0)
    if quick:
        b = Budget(max(1, b.warmup - 1), max(3, b.min_rounds // 2), b.max_rounds // 2,
                   b.seconds / 2)
    if repeats is not None:
        b = Budget(min(b.warmup, 1), repeats, repeats, 0.0)
    b.clock = clock
    return b


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog or "wgangp-fast bench", description="Benchmark the fused gradient-penalty ops and critic steps "
                               "against the eager code they replace; writes "
                               "<out>/<device>-<yyyymmdd>.csv/.md/.png.")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: cuda when a GPU is visible (default: %(default)s)")
    p.add_argument("--suite", choices=("ops", "steps", "all"), default="all")
    p.add_argument("--quick", action="store_true",
                   help="fewer sizes and rounds (CPU ops: 1 and 16 MiB)")
    p.add_argument("--out", default="benchmarks/results", help="results folder")
    p.add_argument("--sizes", type=float, nargs="+", metavar="MIB",
                   help="op sizes in MiB per tensor (default CPU: 1 16 64; GPU: 1 4 16 64 256 "
                        "1024)")
    p.add_argument("--dtypes", nargs="+", choices=("float32", "bfloat16", "float16"),
                   help="default CPU: float32; GPU: float32 bfloat16 (steps: bfloat16 means "
                        "bfloat16 autocast)")
    p.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES),
                   help="op shapes (default: both)")
    p.add_argument("--ops", nargs="+", choices=OP_NAMES, default=list(OP_NAMES))
    p.add_argument("--critics", nargs="+", choices=CRITICS, default=list(CRITICS))
    p.add_argument("--repeats", type=int, help="exact number of timed rounds (overrides the "
                                               "time budget)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads for CPU runs")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall: elapsed time (default); cpu: CPU time of the one compute thread "
                        "(CPU device, implies --threads 1), for a machine shared with other "
                        "work, where elapsed times measure the other work too")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG chart")
    p.add_argument("--render", metavar="CSV", type=Path,
                   help="measure nothing: rewrite the markdown and chart of an existing results "
                        "CSV (e.g. one from another machine), keeping the markdown's notes")
    return p


def _chart(rows: Sequence[Dict[str, str]], path: Path) -> None:
    """plot(rows, path), or a note on stderr where matplotlib is missing."""
    if importlib.util.find_spec("matplotlib") is None:
        print("no chart: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
    else:
        plot(rows, path)


def _preamble(md_path: Path) -> List[str]:
    """The note lines of an existing results markdown (between its title and first section)."""
    if not md_path.exists():
        return []
    lines = md_path.read_text().splitlines()[1:]
    out = []
    for line in lines:
        if line.startswith("## "):
            break
        if not line.startswith("torch "):
            out.append(line.strip() and line)
    # Blank lines between notes stay (they separate the paragraphs); those around them go.
    while out and not out[0]:
        out.pop(0)
    while out and not out[-1]:
        out.pop()
    return out


def render(csv_path: Path, plot_chart: bool = True) -> str:
    """Rewrite <stem>.md (and <stem>.png) of a results CSV from its rows; returns the markdown."""
    rows = merge_rows([], read_csv(csv_path))
    md_path = csv_path.with_suffix(".md")
    text = markdown(rows, _preamble(md_path))
    md_path.write_text(text + "\n")
    if plot_chart:
        _chart(rows, csv_path.with_suffix(".png"))
    return text


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    if args.render is not None:
        if not args.render.is_file():
            raise SystemExit(f"--render: no such results CSV: {args.render}")
        print(render(args.render, not args.no_plot))
        return 0
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    if args.repeats is not None and args.repeats < 1:
        raise SystemExit(f"--repeats must be at least 1, got {args.repeats}")
    if args.sizes is not None and any(not s > 0 for s in args.sizes):
        raise SystemExit(f"--sizes must be positive MiB values, got {args.sizes}")
    if args.clock == "cpu":
        if device.type != "cpu" or args.threads not in (None, 1):
            raise SystemExit("--clock cpu needs --device cpu and one thread (--threads 1)")
        args.threads = 1
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    gpu = device.type == "cuda"
    if args.sizes is not None:
        sizes = args.sizes
    elif gpu:
        sizes = [4.0 ** i for i in range(6)]
    else:
        sizes = [1.0, 16.0] if args.quick else [1.0, 16.0, 64.0]
    dtypes = args.dtypes or (["float32", "bfloat16"] if gpu else ["float32"])

    day = _dt.date.today()
    meta = Meta(device_label(device), day.isoformat(), torch.__version__, triton_version())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = file_stem(meta.device, day)
    failures: List[str] = []
    backends = op_backends(device, failures)
    notes = [f"Threads: torch.get_num_threads() = {torch.get_num_threads()}. "
             f"Op backends on this device: {', '.join(backends)} "
             f"(`reference`: the eager seed-000 formulas). Clock: "
             + ("CUDA events around each call, which starts on an idle GPU (host overhead "
                "included)." if device.type == "cuda" else
                "cpu (CPU time of the one compute thread)." if args.clock == "cpu" else
                "wall (elapsed time).")] + failures
    for line in failures:
        print("WARNING:", line, file=sys.stderr, flush=True)
    print(f"{meta.device}: torch {meta.torch}, triton {meta.triton or '-'}, "
          f"{torch.get_num_threads()} threads; writing {out / stem}.csv", flush=True)

    def log(msg):
        print(msg, flush=True)

    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    rows: List[Dict[str, str]] = []
    if args.suite in ("ops", "all"):
        rows += run_ops(device, sizes, dtypes, args.shapes, args.ops,
                        _budget(device, "ops", args.quick, args.repeats, args.clock), meta, log,
                        backends)
    if args.suite in ("steps", "all"):
        paired: List[str] = []
        rows += run_steps(device, args.critics, dtypes,
                          _budget(device, "steps", args.quick, args.repeats, args.clock), meta,
                          log, paired)
        if paired:
            notes += ["", PAIRED_TITLE + ", a/b from the per-round ratios (reference and "
                      "wgangp_fast timed in the same round), median and a distribution-free 95% "
                      "confidence interval:"] + paired
    else:
        # An ops-only run keeps the step notes of the rows it leaves in place.
        old_md = out / f"{stem}.md"
        kept = [line for line in _preamble(old_md)
                if line.startswith(PAIRED_TITLE) or "paired a/b" in line]
        notes += ([""] + kept) if kept else []

    if hasattr(os, "getloadavg"):
        # Other processes on the machine slow every variant, and the interleaved rounds keep the
        # ratios fair, but the absolute times are only as good as the machine was quiet.
        notes.append(f"1-minute load average at start / end of the latest run: {load_start:.2f} / "
                     f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} logical CPUs.")
    csv_path = out / f"{stem}.csv"
    merged = merge_rows(read_csv(csv_path) if csv_path.exists() else [], rows)
    write_csv(csv_path, merged)
    cmd = " ".join(["python benchmarks/run.py"] + list(argv if argv is not None else sys.argv[1:]))
    notes.append(f"Latest command: `{cmd}`.")
    text = markdown(merged, notes)
    (out / f"{stem}.md").write_text(text + "\n")
    if not args.no_plot:
        _chart(merged, out / f"{stem}.png")
    print()
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
