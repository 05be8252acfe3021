"""The op suite: `interpolate`, `penalty_forward`, `penalty_backward` and `roundtrip` (the three in
sequence) for every backend that runs on the device, against `reference`: the eager formulas of
CTGAN's `calc_gradient_penalty`, which is what users run today.

Two shapes: tabular ([N, 50], pac=10: 500-element groups; name `interpolate`, ...) and image-like
([64, D], pac=1: one group per sample, D up to millions; name `interpolate@image`, ...). GB/s
counts the necessary traffic (README, "How it works"): 3b per element for interpolate,
b for the penalty forward, 2b for its backward, 6b for the round trip; it is compared with a
device-to-device copy (read b + write b per element) measured in the same run. Op inputs are
rotated over several sets whose total is at least twice the last-level cache, so no call finds
its inputs in cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import torch

from ..backends import resolve
from ..ops import gradient_norm_penalty, interpolate
from .harness import (
    DTYPES,
    IMAGE_N,
    LAMBDA_GP,
    MIB,
    OP_NAMES,
    OP_TRAFFIC,
    SHAPE_SUFFIX,
    SHAPES,
    TABULAR_D,
    TABULAR_PAC,
    Budget,
    Meta,
    _cache_bytes,
    _row,
    measure,
    percentile,
    summary_ms,
    synchronize,
)
from .report import _size_label


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
    """CTGAN's alpha expand/view and alpha * real + (1 - alpha) * fake.

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
    """CTGAN's group norms over view(-1, pac * D) and ((n - 1) ** 2).mean(), times lambda."""
    norm = grads.view(-1, pac * grads.size(1)).norm(2, dim=1)
    return ((norm - 1) ** 2).mean() * LAMBDA_GP

def op_functions(backend: str, pac: int):
    """(interpolate, penalty) callables of a backend; `reference` is the eager reference code."""
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
    """The fused backends that run on `device`, then `reference` (the eager reference code).

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
