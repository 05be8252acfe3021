"""The step suite: one critic step, and a whole training iteration, in every way of running it.

A critic step is a forward on real and on fake, the penalty, the backward and the Adam step.
Its variants (the `backend` column):

- `reference`: the reference penalty in the usual loop (CTGAN's for the packed critic, seeds
  002/003's per-sample one for the others);
- `wgangp_fast`: `wgangp_fast.gradient_penalty` as a drop-in in the same loop;
- `eager`, `compile`, `graph`, `compile+graph`: `wgangp_fast.CriticStep` in that mode (the graph
  modes on CUDA only);
- `no_penalty`: the loop without any penalty.

An iteration (name `<critic>-iteration`) is n_critic = 5 critic steps, each on its own real
batch with fresh noise through the generator, then a generator step: the plain loop for
`reference` / `wgangp_fast` / `no_penalty`, `wgangp_fast.TrainStep` for the modes. `setup_s` is
the time a mode spends before its first timed call: compiling, and for the graph modes the
warm-up calls and the capture.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from time import perf_counter
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..penalty import gradient_penalty
from ..steps import CriticStep, GeneratorStep, TrainStep
from ..testing import ctgan_gradient_penalty, per_sample_gradient_penalty
from .harness import (
    AUTOCAST_SUFFIX,
    DTYPES,
    ITERATION_SUFFIX,
    LAMBDA_GP,
    STEP_BACKENDS,
    STEP_MODES,
    STEP_VARIANTS,
    Budget,
    Meta,
    _row,
    measure,
    paired_ratio,
    summary_ms,
    synchronize,
)

N_CRITIC = 5
# the graph modes' eager warm-up calls before the capture (CriticStep's default)
WARMUP = 3
PAIRED_TITLE = "Critic steps of the latest steps run"


@dataclass(frozen=True)
class CriticSpec:
    name: str
    build: Callable[[], torch.nn.Module]
    in_shape: Tuple[int, ...]
    batch: int
    pac: int
    generator: Callable[[], torch.nn.Module]
    latent_dim: int


def critic_specs() -> Dict[str, CriticSpec]:
    """The step-benchmark critics and their generators (models.py, imported lazily)."""
    from ..train.models import (
        ConvCritic,
        ConvGenerator,
        MLPCritic,
        MLPGenerator,
        PacCritic,
        TabularGenerator,
    )

    return {
        "mlp28": CriticSpec("mlp28", lambda: MLPCritic(in_shape=(1, 28, 28)), (1, 28, 28), 64, 1,
                            lambda: MLPGenerator(100, 256, (1, 28, 28)), 100),
        "ctgan": CriticSpec("ctgan", lambda: PacCritic(150, pac=10), (150,), 500, 10,
                            lambda: TabularGenerator(128, 150), 128),
        "conv32": CriticSpec("conv32", lambda: ConvCritic(channels=1, image_size=32),
                             (1, 32, 32), 64, 1, lambda: ConvGenerator(100, 1, 32), 100),
        "conv64": CriticSpec("conv64", lambda: ConvCritic(channels=3, image_size=64),
                             (3, 64, 64), 64, 1, lambda: ConvGenerator(100, 3, 64), 100),
    }


def step_variants(device: torch.device, modes: Sequence[str] = STEP_MODES) -> List[str]:
    """The variants that run on `device`, in table order (the graph modes need CUDA)."""
    wanted = set(modes) | set(STEP_BACKENDS)
    return [v for v in STEP_VARIANTS if v in wanted
            and (device.type == "cuda" or v not in ("graph", "compile+graph"))]


def reference_penalty(spec: CriticSpec) -> Callable:
    """The reference penalty for this critic: CTGAN's for the packed critic, the usual
    per-sample one for the others."""
    if spec.pac > 1:
        return lambda critic, real, fake: ctgan_gradient_penalty(
            critic, real, fake, device=real.device, pac=spec.pac, lambda_=LAMBDA_GP)
    return lambda critic, real, fake: per_sample_gradient_penalty(
        critic, real, fake, lambda_gp=LAMBDA_GP)


def _adam(module: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(module.parameters(), lr=1e-4, betas=(0.0, 0.9))


def _autocast(device: torch.device, dtype: Optional[torch.dtype]):
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def _seed_critic_step(spec, variant, critic, opt, autocast_dtype):
    """The plain loop's critic update with the `variant` penalty, as fn(real, fake)."""
    ref_penalty = reference_penalty(spec)

    def step(real, fake):
        opt.zero_grad(set_to_none=True)
        with _autocast(real.device, autocast_dtype):
            loss = critic(fake).mean() - critic(real).mean()
            if variant == "reference":
                pen = ref_penalty(critic, real, fake)
            elif variant == "wgangp_fast":
                pen = gradient_penalty(critic, real, fake, lambda_gp=LAMBDA_GP, pac=spec.pac)
            else:
                pen = None
        if pen is None:
            loss.backward()
        elif spec.pac > 1:
            # CTGAN's loop: two backward calls, the penalty's first.
            pen.backward(retain_graph=True)
            loss.backward()
        else:
            (loss + pen).backward()
        opt.step()

    return step


def step_case(spec: CriticSpec, variant: str, critic: torch.nn.Module, real: torch.Tensor,
              fake: torch.Tensor, autocast_dtype: torch.dtype | None) -> Callable[[int], object]:
    """fn(k): one critic step with the plain loop's structure and the `variant` penalty."""
    step = _seed_critic_step(spec, variant, critic, _adam(critic), autocast_dtype)
    return lambda k: step(real, fake)


def _setup(fn: Callable[[int], object], calls: int, device: torch.device) -> float:
    """Seconds of the first `calls` calls (compiles, warm-up, capture), untimed later."""
    synchronize(device)
    t0 = perf_counter()
    for k in range(calls):
        fn(k)
    synchronize(device)
    return perf_counter() - t0


def _setup_calls(mode: str) -> int:
    return WARMUP + 1 if mode in ("graph", "compile+graph") else 1


def mode_case(spec: CriticSpec, mode: str, critic: torch.nn.Module, real: torch.Tensor,
              fake: torch.Tensor, autocast_dtype: torch.dtype | None,
              compile_options: Optional[dict] = None
              ) -> Tuple[Callable[[int], object], Optional[float]]:
    """(fn(k): one CriticStep call in `mode`, the seconds its setup took; None for eager)."""
    step = CriticStep(critic, _adam(critic), lambda_gp=LAMBDA_GP, pac=spec.pac, mode=mode,
                      autocast=autocast_dtype, warmup=WARMUP, compile_options=compile_options)

    def fn(k):
        return step(real, fake)

    setup = _setup(fn, _setup_calls(mode), real.device)
    return fn, None if mode == "eager" else setup


def iteration_case(spec: CriticSpec, variant: str, critic: torch.nn.Module,
                   generator: torch.nn.Module, reals: List[torch.Tensor],
                   autocast_dtype: torch.dtype | None, compile_options: Optional[dict] = None
                   ) -> Tuple[Callable[[int], object], Optional[float]]:
    """(fn(k): one training iteration of the `variant`, its setup seconds or None)."""
    device = reals[0].device
    opt_g = _adam(generator)
    if variant in STEP_MODES:
        train = TrainStep(
            CriticStep(critic, _adam(critic), lambda_gp=LAMBDA_GP, pac=spec.pac, mode=variant,
                       autocast=autocast_dtype, warmup=WARMUP, compile_options=compile_options),
            GeneratorStep(generator, critic, opt_g, mode=variant, autocast=autocast_dtype,
                          warmup=WARMUP, compile_options=compile_options),
            latent_dim=spec.latent_dim, n_critic=len(reals))

        def fn(k):
            return train(reals)

        setup = _setup(fn, _setup_calls(variant), device)
        return fn, None if variant == "eager" else setup
    critic_step = _seed_critic_step(spec, variant, critic, _adam(critic), autocast_dtype)

    def iteration(k):
        # the usual loop: the fakes from the generator under no_grad, then its own step
        for real in reals:
            with torch.no_grad(), _autocast(device, autocast_dtype):
                fake = generator(torch.randn(real.shape[0], spec.latent_dim, device=device))
            critic_step(real, fake.to(real.dtype))
        opt_g.zero_grad(set_to_none=True)
        with _autocast(device, autocast_dtype):
            z = torch.randn(reals[0].shape[0], spec.latent_dim, device=device)
            loss_g = -critic(generator(z)).mean()
        loss_g.backward()
        opt_g.step()

    return iteration, None


def run_steps(device: torch.device, critics: Sequence[str], dtypes: Sequence[str],
              budget: Budget, meta: Meta, log: Callable[[str], None] = print,
              paired: List[str] | None = None, modes: Sequence[str] = STEP_MODES,
              iterations: bool = False, compile_options: Optional[dict] = None
              ) -> List[Dict[str, str]]:
    """Step rows (and iteration rows with `iterations`); with a `paired` list, also a line per
    comparison with the paired ratio of `reference` over each variant and its confidence
    interval (paired_ratio). `compile_options` go to torch.compile in the compiled modes."""
    specs = critic_specs()
    variants = step_variants(device, modes)
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
            cases: Dict[str, Callable[[int], object]] = {}
            setups: Dict[str, Optional[float]] = {}
            for v in variants:
                critic = copy.deepcopy(base)
                if v in STEP_MODES:
                    cases[v], setups[v] = mode_case(spec, v, critic, real, fake, autocast_dtype,
                                                    compile_options)
                else:
                    cases[v], setups[v] = step_case(spec, v, critic, real, fake,
                                                    autocast_dtype), None
            nbytes = real.numel() * real.element_size()
            rows += _measure_rows(cases, setups, device, budget, meta, critic_name, label,
                                  spec.batch, nbytes, log, paired)
            if not iterations:
                continue
            torch.manual_seed(1)
            gen_base = spec.generator().to(device)
            reals = [torch.randn(spec.batch, *spec.in_shape, device=device)
                     for _ in range(N_CRITIC)]
            cases, setups = {}, {}
            for v in variants:
                cases[v], setups[v] = iteration_case(spec, v, copy.deepcopy(base),
                                                     copy.deepcopy(gen_base), reals,
                                                     autocast_dtype, compile_options)
            rows += _measure_rows(cases, setups, device, budget, meta,
                                  critic_name + ITERATION_SUFFIX, label, spec.batch, nbytes, log,
                                  paired)
    return rows


def _measure_rows(cases, setups, device, budget, meta, name, label, batch, nbytes, log, paired):
    peaks: Dict[str, float] = {}
    samples = measure(cases, device, budget, peaks)
    rows, med = [], {}
    for v in cases:
        stats = summary_ms(samples[v])
        med[v] = stats[0]
        rows.append(_row(meta, "step", name, v, label, nbytes, stats, None, None, peaks[v],
                         setups[v]))
    ratios = {v: paired_ratio(samples["reference"], samples[v]) for v in cases
              if v != "reference"}
    log(f"[steps] {name} {label} batch {batch}: "
        + ", ".join(f"{v} {med[v]:.2f} ms" for v in cases)
        + "; reference / each, paired: "
        + ", ".join(f"{v} {r[0]:.3f} [{r[1]:.3f}, {r[2]:.3f}]" for v, r in ratios.items()))
    if paired is not None:
        shown = "; ".join(f"{v} {r[0]:.3f} [{r[1]:.3f}, {r[2]:.3f}]" for v, r in ratios.items()
                          if v != "no_penalty")
        paired.append(f"- {name} {label}: reference / variant, paired, 95% CI, "
                      f"{len(samples['reference'])} rounds: {shown}.")
    return rows
