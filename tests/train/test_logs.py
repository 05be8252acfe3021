"""Watching a run: the logged values read from the device once per log_every steps (and still
stopping on a non-finite loss before any checkpoint), history.csv appended as they are read,
TensorBoard event files, sample grids every K steps and a real-data grid once, for points,
images and tables; a run killed with SIGKILL keeps every row it logged."""

from __future__ import annotations

import csv
import importlib.util
import math
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from wgangp_fast import cli
from wgangp_fast.train import NonFiniteLossError, WGANGPConfig, WGANGPTrainer, distributed
from wgangp_fast.train import trainer as trainer_mod
from wgangp_fast.train.config import HISTORY_KEYS

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = str(pathlib.Path(__file__).resolve().parents[2])
TABLE = "x,n,kind\n" + "".join(f"{1.5 + (i % 7) * 0.7:.2f},{(i * 7) % 5 + 1},{'ab'[i % 2]}\n"
                               for i in range(60))


def small(dataset="ring8", **kw):
    settings = dict(steps=6, batch_size=16, hidden_dim=8, latent_dim=4, n_critic=2,
                    device="cpu", n_eval_samples=200)
    if dataset == "csv":
        settings.update(batch_size=20, pac=5)
    settings.update(kw)
    return WGANGPConfig.for_dataset(dataset, **settings)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def _scalars(logdir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc, [(e.step, e.value) for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] \
        else []


# -- the values are read once per log_every steps ----------------------------------------------

def test_values_are_read_once_per_tick_and_the_history_is_the_same(monkeypatch):
    calls = []
    real = distributed.all_reduce_mean

    def counted(t):
        calls.append(tuple(t.shape))
        return real(t)

    monkeypatch.setattr(distributed, "all_reduce_mean", counted)
    every_step = WGANGPTrainer(small(steps=25, log_every=1))
    every_step.train()
    assert len(calls) == 25
    calls.clear()
    ticked = WGANGPTrainer(small(steps=25, log_every=10))
    ticked.train()
    # steps 1-10, 11-20 and 21-25: one read (and one all-reduce) each, of all their rows
    assert calls == [(10, 5), (10, 5), (5, 5)]
    assert ticked.history == every_step.history
    assert all(len(v) == 25 for v in ticked.history.values())


def test_the_learning_rate_and_gradient_norm_are_logged_every_step():
    t = WGANGPTrainer(small(steps=8, lr_warmup=3, log_every=4))
    t.train()
    expected = [t.learning_rates(step) for step in range(8)]
    assert t.history["lr_g"] == [g for g, _ in expected]
    assert t.history["lr_c"] == [c for _, c in expected]
    # warm-up then the ring8 preset's linear decay to 0 at the last step
    assert t.history["lr_g"][0] == pytest.approx(1e-2 / 3)
    assert t.history["lr_g"][2] == pytest.approx(1e-2 * (1 - 2 / 8))
    assert all(n > 0 for n in t.history["grad_norm"])
    clip = WGANGPTrainer(small(steps=2, method="clip"))
    clip.train()
    assert all(math.isnan(n) for n in clip.history["grad_norm"])  # no penalty, no norm


def _poison_at(t, step):
    iterate = t._iterate

    def poisoned():
        if t.step == step - 1:
            with torch.no_grad():
                next(t.critic.parameters()).fill_(float("nan"))
        return iterate()

    t._iterate = poisoned


def test_a_non_finite_loss_stops_within_a_tick_and_before_any_checkpoint(tmp_path):
    t = WGANGPTrainer(small(steps=30, log_every=5, out_dir=str(tmp_path), checkpoint_every=0))
    _poison_at(t, 7)
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 7 "):
        t.train()
    # read at the tick of step 10: at most log_every - 1 steps past the first non-finite one
    assert 7 <= t.step <= 7 + 5 - 1
    assert len(t.history["loss_c"]) == 6
    assert len(_rows(tmp_path / "history.csv")) == 1 + 6
    assert WGANGPTrainer.read_checkpoint(str(tmp_path / "checkpoint.pt"))["step"] == 0


def test_a_checkpoint_reads_the_values_first_and_keeps_the_history_complete(tmp_path):
    t = WGANGPTrainer(small(steps=30, log_every=10, out_dir=str(tmp_path), checkpoint_every=4))
    _poison_at(t, 7)
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 7 "):
        t.train()
    assert t.step == 8  # the checkpoint of step 8 read the values first, and stopped
    state = WGANGPTrainer.read_checkpoint(str(tmp_path / "checkpoint.pt"))
    assert state["step"] == 4
    assert all(len(state["history"][k]) == 4 for k in HISTORY_KEYS)
    good = WGANGPTrainer(small(steps=8, log_every=3, out_dir=str(tmp_path / "b"),
                               checkpoint_every=4))
    good.train()
    saved = WGANGPTrainer.read_checkpoint(str(tmp_path / "b" / "checkpoint.pt"))
    assert saved["history"]["wasserstein"].tolist() == good.history["wasserstein"]


# -- history.csv and TensorBoard, live ------------------------------------------------------

def test_history_csv_grows_as_the_run_goes(tmp_path):
    t = WGANGPTrainer(small(steps=12, log_every=4, out_dir=str(tmp_path)))
    seen = []
    iterate = t._iterate

    def watched():
        seen.append(len(_rows(tmp_path / "history.csv")) - 1)
        return iterate()

    t._iterate = watched
    t.train()
    # rows appear four at a time, during the run
    assert seen == [0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8]
    rows = _rows(tmp_path / "history.csv")
    assert rows[0] == ["step", *HISTORY_KEYS]
    assert [int(r[0]) for r in rows[1:]] == list(range(1, 13))
    assert [float(r[4]) for r in rows[1:]] == pytest.approx(t.history["wasserstein"], rel=1e-5)


def test_tensorboard_holds_every_logged_value_and_the_grids(tmp_path):
    t = WGANGPTrainer(small(steps=6, log_every=2, out_dir=str(tmp_path), tensorboard=True,
                            sample_every=3))
    t.train()
    acc, lr = _scalars(tmp_path / "tensorboard", "lr/generator")
    tags = acc.Tags()["scalars"]
    for tag in ("loss/critic", "loss/generator", "penalty", "wasserstein", "grad_norm",
                "lr/critic"):
        assert tag in tags
    assert [s for s, _ in lr] == list(range(1, 7))
    assert [v for _, v in lr] == pytest.approx(t.history["lr_g"])
    _, w = _scalars(tmp_path / "tensorboard", "wasserstein")
    assert [v for _, v in w] == pytest.approx(t.history["wasserstein"], rel=1e-6)
    images = acc.Tags()["images"]
    assert "samples" in images and "real" in images
    assert [e.step for e in acc.Images("samples")] == [3, 6]


def test_a_resumed_run_rewrites_history_csv_from_its_checkpoint(tmp_path):
    t = WGANGPTrainer(small(steps=4, log_every=1, out_dir=str(tmp_path), checkpoint_every=2))
    t.train()
    with open(tmp_path / "history.csv", "a") as f:
        f.write("5,1,1,1,1,1,1,1\n")  # a row a killed run logged after its last checkpoint
    resumed = WGANGPTrainer.from_checkpoint(str(tmp_path / "checkpoint.pt"), steps=6,
                                            lr_decay_steps=6)
    resumed.train()
    rows = _rows(tmp_path / "history.csv")
    assert [int(r[0]) for r in rows[1:]] == list(range(1, 7))
    assert [float(r[1]) for r in rows[1:5]] == pytest.approx(t.history["loss_c"], rel=1e-5)


def test_a_missing_tensorboard_is_named_before_any_work(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real(name, *a))
    out = tmp_path / "run"
    assert cli.main(["train", "--out", str(out), "--tensorboard", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("wgangp-fast: error: tensorboard (--tensorboard) needs the tensorboard "
                   "package, which is not installed: pip install 'wgangp_fast[tensorboard]'")
    assert not out.exists()
    with pytest.raises(ValueError, match=r"pip install 'wgangp_fast\[tensorboard\]'"):
        WGANGPTrainer(small(tensorboard=True))


# -- sample grids -------------------------------------------------------------------------------

@pytest.mark.parametrize("dataset", ["ring8", "digits", "csv"])
def test_sample_every_writes_grids_from_fixed_latents_and_a_real_grid_once(tmp_path, dataset):
    extra = {}
    if dataset == "csv":
        (tmp_path / "t.csv").write_text(TABLE)
        extra["data_path"] = str(tmp_path / "t.csv")
    out = tmp_path / "run"
    t = WGANGPTrainer(small(dataset, steps=4, sample_every=2, out_dir=str(out), **extra))
    t.train()
    grids = sorted(os.listdir(out / "samples"))
    assert grids == ["real.png", "step_000002.png", "step_000004.png"]
    import matplotlib.image

    pictures = {name: matplotlib.image.imread(out / "samples" / name) for name in grids}
    assert all(p.ndim == 3 and p.shape[0] > 30 for p in pictures.values())
    assert not np.array_equal(pictures["real.png"], pictures["step_000004.png"])
    if dataset == "digits":
        # an 8x8 grid of 8x8 digits, 2-pixel gaps (torchvision's make_grid): 82 pixels,
        # enlarged 4 times to reach 256
        assert pictures["step_000002.png"].shape[:2] == (4 * 82, 4 * 82)
    real_before = (out / "samples" / "real.png").read_bytes()
    # the ring8 preset decays its lr to 0 at its last step: a longer run moves that horizon
    horizon = {"lr_decay_steps": 6} if dataset == "ring8" else {}
    t2 = WGANGPTrainer.from_checkpoint(str(out / "checkpoint.pt"), steps=6, **horizon)
    os.utime(out / "samples" / "real.png", (0, 0))
    t2.train()
    assert (out / "samples" / "real.png").read_bytes() == real_before
    assert os.stat(out / "samples" / "real.png").st_mtime == 0  # written once, not again
    assert "step_000006.png" in os.listdir(out / "samples")
    # the fixed latents: the same grid for the same weights
    a = t2.generate_samples(noise=t2.grid_noise())
    b = t2.generate_samples(noise=t2.grid_noise())
    if dataset != "csv":  # a table's categories are drawn (Gumbel softmax)
        assert torch.equal(a, b)


@pytest.mark.parametrize("dataset", ["ring8", "csv"])
def test_sample_grids_leave_the_training_run_alone(tmp_path, dataset):
    extra = {}
    if dataset == "csv":
        (tmp_path / "t.csv").write_text(TABLE)
        extra["data_path"] = str(tmp_path / "t.csv")
    plain = WGANGPTrainer(small(dataset, steps=4, out_dir=str(tmp_path / "a"), **extra))
    plain.train()
    watched = WGANGPTrainer(small(dataset, steps=4, out_dir=str(tmp_path / "b"),
                                  sample_every=1, **extra))
    watched.train()
    assert watched.history == plain.history
    a = watched.write_sample_grid(str(tmp_path / "c"))
    b = watched.write_sample_grid(str(tmp_path / "d"))
    assert open(a, "rb").read() == open(b, "rb").read()


def test_image_grids_without_torchvision_use_matplotlib(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torchvision(name, *args, **kw):
        if name.startswith("torchvision"):
            raise ImportError("no torchvision here")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_torchvision)
    from wgangp_fast.train import outputs

    images = -np.ones((64, 3, 4, 4))
    images[0] = images[-1] = 1.0
    path = tmp_path / "grid.png"
    outputs.save_image_grid(images, str(path))
    import matplotlib.image

    grid = matplotlib.image.imread(path)
    # 8 x (4 + 2) + 2 = 50 pixels, enlarged 6 times (to at least 256)
    assert grid.shape[:2] == (300, 300)
    # black gaps of 2 x 6 pixels; the first and last images white, the second black
    assert grid[11, 11, :3].max() == 0 and grid[12, 12, :3].min() == 1
    assert grid[-13, -13, :3].min() == 1 and grid[12, 12 + 36, :3].max() == 0


# -- a killed run ---------------------------------------------------------------------------

@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_sigkill_keeps_every_logged_row_in_history_csv_and_tensorboard(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen(
        [sys.executable, "-m", "wgangp_fast", "train", "--out", str(out), "--steps", "100000",
         "--batch", "16", "--hidden-dim", "8", "--latent-dim", "4", "--n-critic", "1",
         "--log-every", "3", "--tensorboard", "--no-progress", "--device", "cpu",
         "--threads", "1"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    history = out / "history.csv"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if history.exists() and len(_rows(history)) > 30:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the run logged nothing in 120 s")
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    rows = _rows(history)
    steps = [int(r[0]) for r in rows[1:]]
    assert len(steps) >= 30 and steps == list(range(1, len(steps) + 1))
    assert len(steps) % 3 == 0  # whole ticks of log_every rows
    assert all(len(r) == 1 + len(HISTORY_KEYS) and all(math.isfinite(float(v)) or v == "nan"
                                                      for v in r) for r in rows[1:])
    # TensorBoard's own reader: every step history.csv holds, with its value
    _, loss = _scalars(out / "tensorboard", "loss/critic")
    logged = dict(loss)
    assert set(steps) <= set(logged)
    assert [logged[s] for s in steps] == pytest.approx([float(r[1]) for r in rows[1:]],
                                                       rel=1e-5)


def test_the_trainer_module_reads_logged_values_only_in_flush_logs():
    # the per-iteration host read (all_reduce_mean(values).cpu() in every step) is gone: the
    # loop calls no .cpu(), .item() or .tolist() outside flush_logs
    import inspect

    source = inspect.getsource(trainer_mod.WGANGPTrainer._iterate)
    assert ".cpu()" not in source and ".item()" not in source and ".tolist()" not in source
    assert "all_reduce_mean" not in source
