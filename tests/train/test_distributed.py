"""Data-parallel training on the CPU (gloo, 2 processes): one critic step's gradients with two
ranks of half a batch each equal one process's on the whole batch (the penalty's part included);
the ranks draw different data but hold identical weights; a resumed run continues exactly; and
`torchrun -m wgangp_fast train` runs end to end with only rank 0 writing."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed

from wgangp_fast.train import WGANGPConfig, WGANGPTrainer, distributed

from ..ranks import LOOPBACK, init_group, spawn

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="torch.distributed is not available")

WORLD = 2
HALF = 8  # per-rank batch; a multiple of PAC, so no pac group straddles two ranks
PAC = 2
SPAWN_TIMEOUT_S = 120  # the two ranks take 5 s on this 2-core machine


def _config(**kw):
    settings = dict(model="pac", pac=PAC, batch_size=HALF, hidden_dim=8, latent_dim=4,
                    n_critic=2, steps=4, device="cpu", n_eval_samples=200, lr=1e-3,
                    lr_decay="none")
    settings.update(kw)
    return WGANGPConfig.for_dataset("ring8", **settings)


def _fixed_batch():
    """A combined batch of WORLD * HALF rows and one alpha per pac group."""
    g = torch.Generator().manual_seed(123)
    real = torch.randn(WORLD * HALF, 2, generator=g)
    fake = torch.randn(WORLD * HALF, 2, generator=g)
    alpha = torch.rand(WORLD * HALF // PAC, generator=g)
    return real, fake, alpha


def _set_dropout(t, p):
    """PacCritic's dropout draws other masks per rank than for the whole batch: switched off for
    the gradient comparison so that it is exact (training keeps it on)."""
    before = 0.0
    for m in t.critic.modules():
        if isinstance(m, torch.nn.Dropout):
            before, m.p = m.p, p
    return before


def _grads(module):
    return torch.cat([p.grad.detach().reshape(-1) for p in module.parameters()])


def _step_gradients(t, real, fake, alpha):
    """The gradients of one step of the trainer's own critic step (averaged over the ranks in a
    distributed run), with alpha fixed; the weights and the optimiser state are put back."""
    step = t.critic_step
    saved = copy.deepcopy((t.critic.state_dict(), t.optimizer_c.state_dict()))
    step.alpha_fn = lambda m, like: alpha
    try:
        step(real, fake)
    finally:
        step.alpha_fn = None
    grads = _grads(t.critic)
    t.critic.load_state_dict(saved[0])
    t.optimizer_c.load_state_dict(saved[1])
    return grads


def _params(module):
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def _worker(rank: int, folder: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    # the trainer uses the group as it is; torchrun's own rendezvous is tested below
    init_group(rank, WORLD, folder)
    out = {}
    try:
        t = WGANGPTrainer(_config())
        assert t.rank == rank and t.world_size == WORLD and t.is_main_process == (rank == 0)
        real, fake, alpha = _fixed_batch()
        rows = slice(rank * HALF, (rank + 1) * HALF)
        groups = slice(rank * HALF // PAC, (rank + 1) * HALF // PAC)
        p = _set_dropout(t, 0.0)
        out["grads"] = _step_gradients(t, real[rows], fake[rows], alpha[groups])
        _set_dropout(t, p)
        out["first_batch"] = t.sampler.next()

        ckpt = os.path.join(folder, "checkpoint.pt")
        runs, run = [], t.critic_step.run
        t.critic_step.run = lambda *a, **kw: (runs.append(None), run(*a, **kw))[1]
        t.train(2)
        out["critic_runs"] = len(runs)
        t.save_checkpoint(ckpt)
        t.train(4)
        out["params"] = torch.cat([_params(t.critic), _params(t.generator)])
        out["noise"] = torch.randn(4)
        resumed = WGANGPTrainer.from_checkpoint(ckpt)
        assert resumed.step == 2
        resumed.train(4)
        out["resumed"] = torch.cat([_params(resumed.critic), _params(resumed.generator)])
        out["history"] = torch.tensor(t.history["wasserstein"])
    finally:
        distributed.cleanup()
        torch.distributed.destroy_process_group()
    torch.save(out, os.path.join(folder, f"rank{rank}.pt"))


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("ddp"))
    return folder, spawn(_worker, WORLD, folder, SPAWN_TIMEOUT_S)


def test_two_ranks_of_half_a_batch_give_the_whole_batch_gradient(two_ranks):
    _, ranks = two_ranks
    torch.set_num_threads(1)
    single = WGANGPTrainer(_config(batch_size=WORLD * HALF))
    _set_dropout(single, 0.0)
    assert single.world_size == 1
    real, fake, alpha = _fixed_batch()
    whole = _step_gradients(single, real, fake, alpha)
    for r in range(WORLD):
        torch.testing.assert_close(ranks[r]["grads"], whole, rtol=1e-5, atol=1e-7)
    # the all-reduce did something: one half alone gives another gradient
    half = _step_gradients(single, real[:HALF], fake[:HALF], alpha[:HALF // PAC])
    assert not torch.allclose(half, whole, rtol=1e-3, atol=1e-5)


def test_ranks_draw_their_own_data_and_hold_identical_weights(two_ranks):
    folder, ranks = two_ranks
    a, b = ranks
    # every critic step of the distributed run went through the trainer's CriticStep
    assert a["critic_runs"] == b["critic_runs"] == 2 * _config().n_critic
    assert not torch.equal(a["first_batch"], b["first_batch"])
    assert not torch.equal(a["noise"], b["noise"])
    assert torch.equal(a["params"], b["params"])
    assert torch.isfinite(a["params"]).all()
    # logged losses are the mean over the ranks: the same on every rank
    assert torch.equal(a["history"], b["history"])
    state = WGANGPTrainer.read_checkpoint(os.path.join(folder, "checkpoint.pt"))
    assert state["step"] == 2 and len(state["ranks"]) == WORLD


def test_a_resumed_distributed_run_ends_with_the_same_weights(two_ranks):
    _, ranks = two_ranks
    for r in ranks:
        assert torch.equal(r["resumed"], r["params"])


def test_torchrun_cli_trains_and_only_rank_0_writes(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", **LOOPBACK)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           str(WORLD), "-m", "wgangp_fast", "train", "--out", str(out), "--steps", "2",
           "--batch", "8", "--hidden-dim", "8", "--latent-dim", "4", "--n-critic", "1",
           "--eval-samples", "200", "--no-progress", "--device", "cpu", "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("done: 2 steps") == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["world_size"] == WORLD
    state = WGANGPTrainer.read_checkpoint(str(out / "checkpoint.pt"))
    assert len(state["ranks"]) == WORLD
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_derive_seed_is_deterministic_and_rank_specific():
    assert distributed.derive_seed(1, 0, 5) == distributed.derive_seed(1, 0, 5)
    assert len({distributed.derive_seed(1, r, s) for r in range(4) for s in range(4)}) == 16
    assert 0 <= distributed.derive_seed(2 ** 40, 3, 7) < 2 ** 63


def test_single_process_setup_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info, device = distributed.setup("cpu")
    assert not info.enabled and info.is_main and device is None
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE must be an integer"):
        distributed.setup("cpu")
