"""pytest-benchmark of one critic step: the seed code's penalty (`reference`), the drop-in
`wgangp_fast.gradient_penalty` in the same loop, and no penalty (`make bench`).

Same steps as `python benchmarks/run.py --suite steps` (wgangp_fast/bench/steps.py); the timed function
synchronises the GPU.
"""

from __future__ import annotations

import copy

import pytest
import torch

from wgangp_fast import bench

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("variant", bench.STEP_BACKENDS)
@pytest.mark.parametrize("critic_name", bench.CRITICS)
def test_step(benchmark, critic_name, variant):
    spec = bench.critic_specs()[critic_name]
    torch.manual_seed(0)
    critic = spec.build().to(DEVICE)
    real = torch.randn(spec.batch, *spec.in_shape, device=DEVICE)
    fake = torch.randn(spec.batch, *spec.in_shape, device=DEVICE)
    before = copy.deepcopy(critic.state_dict())
    step = bench.step_case(spec, variant, critic, real, fake, None)
    counter = iter(range(1 << 30))

    def call():
        step(next(counter))
        bench.synchronize(DEVICE)

    benchmark.group = f"step {critic_name} batch {spec.batch}"
    benchmark.extra_info.update(device=bench.device_label(DEVICE),
                                size_bytes=real.numel() * real.element_size())
    benchmark(call)
    after = critic.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before), "the step updated nothing"
