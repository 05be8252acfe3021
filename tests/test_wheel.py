"""`pip wheel` of the source tree gives a wheel that works on its own: installed into an empty
folder and imported from outside the checkout, with nothing else of wgangp_fast in reach, it
loads its compiled CPU extension, runs both ops and the drop-in, and trains two CLI steps.
Marked slow (about 80-110 s here, nearly all of it compiling the extension); `make test` runs it.

The wheel is built without the CUDA extension (an nvcc compile costs minutes on a CI machine and
tests/backends/test_cuda_build.py covers that build in place); WGANGP_FAST_WHEEL_CUDA=1 builds it with CUDA
forced and then also requires `wgangp_fast._C_cuda` in the wheel, loaded from there.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
WITH_CUDA = os.environ.get("WGANGP_FAST_WHEEL_CUDA", "").strip().lower() in ("1", "true", "yes")
BUILD_TIMEOUT_S = 1800

pytestmark = pytest.mark.slow

# What the build reads, as an sdist would carry it: build outputs in the checkout (the in-place
# .so files, build/, *.egg-info) stay behind, so the wheel holds only what setup.py builds.
SOURCES = ("setup.py", "pyproject.toml", "README.md", "csrc", "wgangp_fast")
LEFT_BEHIND = shutil.ignore_patterns("*.so", "*.pyd", "__pycache__", "*.pyc", "*.egg-info")

# Runs in the installed copy's interpreter; prints one JSON line of what it saw.
PROBE = r"""
import json, sys
import torch
import wgangp_fast as wgf
from wgangp_fast.testing import autograd_gradient_norm_penalty, autograd_interpolate

site = sys.argv[1]
mods = {name: getattr(m, "__file__", None) for name, m in list(sys.modules.items())
        if name == "wgangp_fast" or name.startswith("wgangp_fast.")}
outside = {k: v for k, v in mods.items() if v is not None and not v.startswith(site)}

torch.manual_seed(0)
real, fake = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
alpha = torch.rand(3, dtype=torch.float64)
x = wgf.interpolate(real, fake, alpha, pac=2, backend="cpu")
x_err = (x - autograd_interpolate(real, fake, alpha, 2)).abs().max().item()
g = torch.randn(6, 5, dtype=torch.float64)
p = wgf.gradient_norm_penalty(g, pac=2, scale=10.0, backend="cpu")
p_err = abs(p.item() - autograd_gradient_norm_penalty(g, pac=2, scale=10.0).item())
critic = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
gp = wgf.gradient_penalty(critic, real, fake, lambda_gp=10.0, backend="cpu")
gp.backward()

cuda = None
if "--cuda" in sys.argv:
    import wgangp_fast._C_cuda as cm
    cuda = cm.__file__
print(json.dumps({
    "package": wgf.__file__, "outside": outside, "backends": wgf.available_backends(),
    "cpu_ext": sys.modules["wgangp_fast._C"].__file__, "x_err": x_err, "p_err": p_err,
    "gp": gp.item(), "critic_grad": critic[0].weight.grad.abs().sum().item(), "cuda_ext": cuda,
    "editable_finders": [repr(f) for f in sys.meta_path if "editable" in repr(f).lower()],
}))
"""


def _pip(*args, cwd, env, timeout):
    cmd = [sys.executable, "-m", "pip", *args]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


def _clean_env():
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "WGANGP_FAST_BACKEND", "PYTHONSTARTUP")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _build_and_install(base: Path):
    """(site folder, wheel path, build seconds): the wheel built from a copy of the sources and
    installed with `pip install --no-deps --target` into an empty folder."""
    src = base / "src"
    src.mkdir(parents=True)
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=LEFT_BEHIND)
        else:
            shutil.copy2(path, src / name)
    env = _clean_env()
    if WITH_CUDA:
        env.pop("WGANGP_FAST_SKIP_CUDA_BUILD", None)
        env["WGANGP_FAST_FORCE_CUDA"] = "1"
    else:
        env["WGANGP_FAST_SKIP_CUDA_BUILD"] = "1"
        env.pop("WGANGP_FAST_FORCE_CUDA", None)
    dist = base / "dist"
    start = time.perf_counter()
    _pip("wheel", "--no-build-isolation", "--no-deps", "-w", str(dist), str(src), cwd=base,
         env=env, timeout=BUILD_TIMEOUT_S)
    seconds = time.perf_counter() - start
    wheels = sorted(dist.glob("wgangp_fast-*.whl"))
    assert len(wheels) == 1, f"expected one wgangp_fast wheel in {dist}, found {wheels}"
    site = base / "site"
    site.mkdir()
    _pip("install", "--no-deps", "--target", str(site), str(wheels[0]), cwd=base, env=env,
         timeout=300)
    print(f"\nwheel {wheels[0].name}: built in {seconds:.0f} s")
    return site, wheels[0], seconds


def _run_outside(site: Path, args, tmp_path, timeout=600):
    """`python -S ARGS` in an empty folder with only SITE and torch's site-packages importable.

    -S keeps site-packages' .pth files from running: the editable install a development venv
    holds would otherwise hand out wgangp_fast modules from the checkout."""
    torch_site = Path(torch.__file__).resolve().parent.parent
    env = _clean_env()
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(torch_site)])
    cwd = tmp_path / "elsewhere"
    cwd.mkdir(exist_ok=True)
    done = subprocess.run([sys.executable, "-S", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done, cwd


def _check_contents(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = sorted(str(p.parent.relative_to(ROOT)).replace(os.sep, "/")
                      for p in (ROOT / "wgangp_fast").rglob("__init__.py"))
    assert "wgangp_fast/backends" in packages
    for package in packages:
        assert f"{package}/__init__.py" in names, f"{package} is missing from {wheel.name}"
    modules = sorted(str(p.relative_to(ROOT)).replace(os.sep, "/")
                     for p in (ROOT / "wgangp_fast").rglob("*.py"))
    assert [m for m in modules if m not in names] == []
    extensions = {n.split("/")[-1].split(".")[0] for n in names if n.endswith(".so")}
    assert "_C" in extensions
    assert ("_C_cuda" in extensions) == WITH_CUDA, sorted(extensions)
    entry_points = [n for n in names if n.endswith("entry_points.txt")]
    assert entry_points and "wgangp-fast = wgangp_fast.cli:main" in zipfile.ZipFile(wheel).read(
        entry_points[0]).decode()


def _check_ops(site: Path, tmp_path: Path):
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    args = [str(probe), str(site)] + (["--cuda"] if WITH_CUDA else [])
    done, _ = _run_outside(site, args, tmp_path)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["editable_finders"] == []
    assert seen["package"].startswith(str(site)), seen["package"]
    assert seen["outside"] == {}, f"modules loaded from outside the installed wheel: {seen['outside']}"
    assert seen["cpu_ext"].startswith(str(site)), seen["cpu_ext"]
    assert "cpu" in seen["backends"]
    assert seen["x_err"] <= 1e-15 and seen["p_err"] <= 1e-12
    assert seen["gp"] > 0 and seen["critic_grad"] > 0
    if WITH_CUDA:
        assert seen["cuda_ext"] and seen["cuda_ext"].startswith(str(site)), seen["cuda_ext"]


def _check_cli(site: Path, tmp_path: Path):
    args = ["-m", "wgangp_fast", "train", "--dataset", "ring8", "--steps", "2", "--batch", "16",
            "--threads", "1", "--no-progress", "--eval-samples", "200", "--out", "run"]
    done, cwd = _run_outside(site, args, tmp_path)
    metrics = json.loads((cwd / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["method"] == "gp"
    assert math.isfinite(metrics["final_gp"])
    assert (cwd / "run" / "checkpoint.pt").is_file()
    assert "done: 2 steps" in done.stdout
    assert (site / "bin" / "wgangp-fast").is_file()


# One test for the whole round trip: under pytest-xdist (the GPU check runs the suite with -n 4)
# separate tests sharing a module fixture would each build the wheel in their own worker.
def test_wheel_builds_installs_and_runs_outside_the_checkout(tmp_path):
    site, wheel, _ = _build_and_install(tmp_path / "wheel")
    _check_contents(wheel)
    _check_ops(site, tmp_path)
    _check_cli(site, tmp_path)
