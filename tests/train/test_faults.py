"""Fault injection: a training process killed with SIGKILL in the middle of a checkpoint write (in
torch.save, between the write and the rename, just after the rename) or at a random moment loses
nothing but the steps since its last checkpoint. The folder holds a loadable checkpoint, the next
run takes over the dead run's lock and removes the temporary file it left, and the resumed run
ends with exactly the weights, optimiser state and history of an uninterrupted run. SIGTERM stops
a run after the current step with a checkpoint of it."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from wgangp_fast import cli
from wgangp_fast.train import WGANGPConfig, WGANGPTrainer
from wgangp_fast.train.folder import LOCK_NAME

if sys.platform == "win32":
    pytest.skip("SIGKILL and fork-free process control are POSIX", allow_module_level=True)

ROOT = str(pathlib.Path(__file__).resolve().parents[2])
STEPS = 6
SETTINGS = dict(steps=STEPS, batch_size=16, hidden_dim=8, latent_dim=4, n_critic=2, device="cpu",
                n_eval_samples=200, checkpoint_every=1)

# The child trains with SETTINGS; at its STALL_AT-th checkpoint write it touches READY and
# sleeps at the point STALL_POINT names, for the parent to kill it there.
CHILD = textwrap.dedent("""
    import os, sys, time
    import torch
    torch.set_num_threads(1)
    from wgangp_fast import train as T

    out, point, stall_at, ready = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    saves = {"n": 0}

    def stall():
        open(ready, "w").close()
        time.sleep(600)

    real_save, real_replace = torch.save, os.replace

    def save(obj, f, *args, **kw):
        saves["n"] += 1
        if point == "torch.save" and saves["n"] == stall_at:
            import io
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kw)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])  # a torn temporary file
            f.flush()
            stall()
        return real_save(obj, f, *args, **kw)

    def replace(src, dst):
        if point == "before-rename" and saves["n"] == stall_at:
            stall()
        real_replace(src, dst)
        if point == "after-rename" and saves["n"] == stall_at:
            stall()

    torch.save, os.replace = save, replace
    if point == "slow":  # steps long enough for a kill at a chosen delay to land inside the run
        step = T.WGANGPTrainer._iterate

        def slow_step(self):
            time.sleep(0.1)
            return step(self)

        T.WGANGPTrainer._iterate = slow_step
    cfg = T.WGANGPConfig.for_dataset("ring8", out_dir=out, **SETTINGS)
    T.WGANGPTrainer(cfg).train()
""").replace("**SETTINGS", ", ".join(f"{k}={v!r}" for k, v in SETTINGS.items()))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def straight():
    """The uninterrupted run: final weights, optimiser states and history."""
    torch.set_num_threads(1)
    t = WGANGPTrainer(WGANGPConfig.for_dataset("ring8", **SETTINGS))
    t.train()
    return t.state_dict()


def _child(tmp_path, point, stall_at):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    ready = tmp_path / "ready"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(script), str(out), point, str(stall_at),
                             str(ready)], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    return proc, out, ready


def _wait_for(proc, path, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the child ended early ({proc.returncode}): "
                                 f"{proc.stdout.read().decode()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the child did not reach its stall point")
        time.sleep(0.05)


def _kill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _temporaries(out):
    return sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp"))


def _assert_same_run(a, b):
    for part in ("generator", "critic"):
        for k, v in a[part].items():
            assert torch.equal(v, b[part][k]), f"{part}.{k}"
    for part in ("optimizer_g", "optimizer_c"):
        for i, st in a[part]["state"].items():
            for k, v in st.items():
                assert torch.equal(v, b[part]["state"][i][k]), f"{part}.{i}.{k}"
    for k, v in a["history"].items():
        assert torch.equal(v, b["history"][k]), f"history.{k}"
    assert a["step"] == b["step"] and a["critic_iters"] == b["critic_iters"]


# the 1st save is the step-0 checkpoint, the k-th the one of step k - 1
@pytest.mark.parametrize("point, stall_at, saved_step", [
    ("torch.save", 4, 2),
    ("before-rename", 3, 1),
    ("after-rename", 5, 4),
])
def test_sigkill_during_a_checkpoint_write_then_resume_equals_an_uninterrupted_run(
        tmp_path, straight, point, stall_at, saved_step):
    proc, out, ready = _child(tmp_path, point, stall_at)
    _wait_for(proc, ready)
    _kill(proc)
    ckpt = out / "checkpoint.pt"
    assert WGANGPTrainer.read_checkpoint(str(ckpt))["step"] == saved_step
    left = _temporaries(out)
    assert len(left) == (0 if point == "after-rename" else 1), left
    assert (out / LOCK_NAME).read_text().split()[0] == str(proc.pid)  # the dead run's lock

    resumed = WGANGPTrainer.from_checkpoint(str(ckpt))
    resumed.train()
    assert _temporaries(out) == [] and not (out / LOCK_NAME).exists()
    _assert_same_run(straight, resumed.state_dict())
    _assert_same_run(straight, WGANGPTrainer.read_checkpoint(str(ckpt)))


def test_the_cli_resume_after_a_sigkill_says_what_it_cleaned(tmp_path, straight, capsys):
    proc, out, ready = _child(tmp_path, "before-rename", 4)
    _wait_for(proc, ready)
    _kill(proc)
    assert cli.main(["train", "--out", str(out), "--resume", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"took over the lock of an earlier run on {out} (pid {proc.pid} on" in err
    assert "removed 1 temporary checkpoint file(s)" in err
    assert _temporaries(out) == [] and not (out / LOCK_NAME).exists()
    _assert_same_run(straight, WGANGPTrainer.read_checkpoint(str(out / "checkpoint.pt")))


@pytest.mark.parametrize("delay", [0.05, 0.25, 0.45])
def test_sigkill_at_any_moment_then_resume_equals_an_uninterrupted_run(tmp_path, straight, delay):
    # no stall: killed wherever the run is `delay` s after its first checkpoint (steps of
    # 0.1 s or more, so before the run ends)
    proc, out, _ = _child(tmp_path, "slow", 0)
    _wait_for(proc, out / "checkpoint.pt")
    time.sleep(delay)
    assert proc.poll() is None, "the run ended before the kill"
    _kill(proc)
    assert WGANGPTrainer.read_checkpoint(str(out / "checkpoint.pt"))["step"] < STEPS
    resumed = WGANGPTrainer.from_checkpoint(str(out / "checkpoint.pt"))
    resumed.train()
    _assert_same_run(straight, resumed.state_dict())
    assert _temporaries(out) == []


def test_sigterm_stops_after_the_step_with_a_checkpoint_of_it(tmp_path, straight):
    script = tmp_path / "cli_child.py"
    script.write_text("import sys\nfrom wgangp_fast import cli\nsys.exit(cli.main(sys.argv[1:]))\n")
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    # far more steps than the run can take before the signal (a quiet machine trains these tiny
    # models at hundreds of steps per second), so the signal always meets the training loop
    steps = 10 ** 6
    argv = ["train", "--out", str(out), "--no-progress", "--threads", "1", "--steps", str(steps)]
    for k, flag in (("batch_size", "--batch"), ("hidden_dim", "--hidden-dim"),
                    ("latent_dim", "--latent-dim"), ("n_critic", "--n-critic"),
                    ("device", "--device"), ("n_eval_samples", "--eval-samples")):
        argv += [flag, str(SETTINGS[k])]
    argv += ["--checkpoint-every", "100000"]  # only the step-0 one, so SIGTERM's is the second
    proc = subprocess.Popen([sys.executable, str(script), *argv], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(proc, out / "checkpoint.pt")
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    state = WGANGPTrainer.read_checkpoint(str(out / "checkpoint.pt"))
    step = state["step"]
    assert 0 < step < steps
    assert f"SIGTERM stopped the run after step {step}; checkpoint saved to" in err
    assert "continue with --resume" in err
    assert not (out / LOCK_NAME).exists() and _temporaries(out) == []
