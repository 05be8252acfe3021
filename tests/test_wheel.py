"""`pip wheel` of the source tree gives one wheel (cp39-abi3: any CPython >= 3.9) that works on its
own with every torch >= 2.10: installed into an empty folder and imported from outside the
checkout, with nothing else of wgangp_fast in reach, it loads its compiled CPU library, runs both
ops and the drop-in, and trains two CLI steps under the project's torch; and under an older torch
(torch 2.13 CPU, WGANGP_FAST_OLD_TORCH, in its own virtual environment in build/old-torch/venv,
made on first use) it runs the op matrix's CPU cases (tests/ops/test_ops.py and
test_dispatch_paths.py, copied out of the tree) on the compiled `cpu` backend, not the reference
fallback. Marked slow; `make test` runs it: about 30 s of C++ compilation on this 2-core machine,
20 s of tests, plus about a minute the first time for the venv.

Its metadata is what a package index shows: the license as an SPDX expression with the LICENSE
file, and docs/pypi.md, a description without relative links. `make wheel` installs only what the
build needs (torch, setuptools, wheel, ninja), checked on its dry run.

The wheel is built without the CUDA extension (an nvcc compile costs minutes on a CI machine and
tests/backends/test_cuda_build.py covers that build in place); WGANGP_FAST_WHEEL_CUDA=1 builds it
with CUDA forced and then also requires `wgangp_fast/_C_cuda` in the wheel, loaded from there
under the project's torch (the old torch's venv is a CPU build, where it reports itself
unloadable).
"""

from __future__ import annotations

import json
import math
import os
import re
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
# The second torch the wheel must run under: older than the project's, a small CPU build that pip
# installs from local disk here.
OLD_TORCH = os.environ.get("WGANGP_FAST_OLD_TORCH", "torch==2.13.0+cpu")
OLD_VENV = ROOT / "build" / "old-torch" / "venv"
# The op matrix's CPU cases, run from a copy of these test files.
MATRIX = ("tests/ops/test_ops.py", "tests/ops/test_dispatch_paths.py")
MATRIX_SUPPORT = ("tests/__init__.py", "tests/ops/__init__.py", "tests/conftest.py",
                  "tests/cases.py", "pyproject.toml")

pytestmark = pytest.mark.slow

# What the build reads, as an sdist would carry it: build outputs in the checkout (the in-place
# .so files, build/, *.egg-info) stay behind, so the wheel holds only what setup.py builds.
SOURCES = ("setup.py", "pyproject.toml", "LICENSE", "docs/pypi.md", "csrc", "wgangp_fast")
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
    lib = wgf.backends._cuda_extension()
    assert lib.loaded, lib.error
    cuda = lib.path
print(json.dumps({
    "package": wgf.__file__, "outside": outside, "backends": wgf.available_backends(),
    "cpu_ext": wgf.backends._cpu_extension().path, "x_err": x_err, "p_err": p_err,
    "gp": gp.item(), "critic_grad": critic[0].weight.grad.abs().sum().item(), "cuda_ext": cuda,
    "editable_finders": [repr(f) for f in sys.meta_path if "editable" in repr(f).lower()],
    "torch": torch.__version__, "loaded": sorted(torch.ops.loaded_libraries),
    "cuda_status": wgf.backend_status()["cuda"],
}))
"""


def _pip(*args, cwd, env, timeout):
    return _pip_of(Path(sys.executable), *args, env=env, timeout=timeout, cwd=cwd)


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
            (src / name).parent.mkdir(parents=True, exist_ok=True)
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
    libraries = [n.split("/")[-1] for n in names if n.endswith(".so")]
    extensions = {n.split(".")[0] for n in libraries}
    assert "_C" in extensions
    assert ("_C_cuda" in extensions) == WITH_CUDA, sorted(extensions)
    # One wheel for every CPython >= 3.9: the libraries hold no Python C API (abi3)
    assert "-cp39-abi3-" in wheel.name, wheel.name
    assert all(n.endswith(".abi3.so") for n in libraries), libraries
    tags = [line for line in zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/WHEEL"))).decode().splitlines()
        if line.startswith("Tag:")]
    assert tags and all(t.split(": ")[1].startswith("cp39-abi3-") for t in tags), tags
    # what a package index shows: the license as an SPDX expression with its file, and a
    # description made for it, whose links all leave the repository
    wheel_zip = zipfile.ZipFile(wheel)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), sorted(names)
    metadata = wheel_zip.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    head, _, description = metadata.partition("\n\n")
    assert "License-Expression: Apache-2.0" in head.splitlines(), head
    assert "License-File: LICENSE" in head.splitlines(), head
    assert not [line for line in head.splitlines() if line.startswith("License:")], head
    assert description.startswith("# wgangp_fast"), description[:200]
    assert description == (ROOT / "docs" / "pypi.md").read_text()
    links = re.findall(r"\]\(([^)]*)\)", description) + re.findall(r'src="([^"]*)"', description)
    assert [u for u in links if not u.startswith(("https://", "http://"))] == [], links
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
    else:
        # advice a wheel's user can follow: how the CUDA library gets built, not "the source tree"
        status = seen["cuda_status"]
        assert status.startswith("not compiled with CUDA"), status
        assert "WGANGP_FAST_FORCE_CUDA=1" in status and "CUDA toolkit" in status, status
        assert "source tree" not in status and "README" not in status, status


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


def _old_torch_python() -> Path:
    """The python of a virtual environment holding OLD_TORCH (and numpy, pytest), made once."""
    python = OLD_VENV / "bin" / "python"
    stamp = OLD_VENV / ".wgangp_fast-deps"
    if python.exists() and stamp.exists() and stamp.read_text() == OLD_TORCH:
        return python
    shutil.rmtree(OLD_VENV, ignore_errors=True)
    OLD_VENV.parent.mkdir(parents=True, exist_ok=True)
    env = _clean_env()
    made = subprocess.run([sys.executable, "-m", "venv", str(OLD_VENV)], capture_output=True,
                          text=True, timeout=300, env=env)
    assert made.returncode == 0, made.stderr
    _pip_of(python, "install", OLD_TORCH, "numpy", "pytest", env=env, timeout=1200)
    stamp.write_text(OLD_TORCH)
    return python


def _pip_of(python: Path, *args, env, timeout, cwd=None):
    cmd = [str(python), "-m", "pip", *args]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


def _check_under_old_torch(wheel: Path, tmp_path: Path):
    """The same wheel in OLD_TORCH's venv: it loads its CPU library there (no undefined symbol)
    and passes the op matrix's CPU cases, imported from the wheel, not the tree."""
    python = _old_torch_python()
    env = _clean_env()
    site = tmp_path / "old-site"
    _pip_of(python, "install", "--no-deps", "--target", str(site), str(wheel), env=env,
            timeout=300)
    env["PYTHONPATH"] = str(site)
    runner = tmp_path / "old-tests"
    for name in MATRIX + MATRIX_SUPPORT:
        (runner / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, runner / name)
    probe = runner / "probe.py"
    probe.write_text(PROBE)
    done = subprocess.run([str(python), str(probe), str(site)], cwd=runner, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    want = OLD_TORCH.partition("==")[2] or None
    assert want is None or seen["torch"] == want, (seen["torch"], OLD_TORCH)
    assert seen["torch"] != torch.__version__
    assert seen["package"].startswith(str(site)) and seen["outside"] == {}
    assert seen["cpu_ext"].startswith(str(site)) and seen["cpu_ext"] in seen["loaded"]
    assert "cpu" in seen["backends"], seen["backends"]
    assert seen["x_err"] <= 1e-15 and seen["p_err"] <= 1e-12
    matrix = subprocess.run([str(python), "-m", "pytest", *MATRIX, "-q", "-p", "no:cacheprovider",
                             "-m", "not triton_interp and not gpu", "-W",
                             "error::wgangp_fast.backends.ExtensionWarning"],
                            cwd=runner, env=env, capture_output=True, text=True, timeout=1200)
    tail = matrix.stdout[-3000:] + matrix.stderr[-2000:]
    assert matrix.returncode == 0, tail
    passed = re.search(r"(\d+) passed", matrix.stdout)
    assert passed and int(passed.group(1)) > 1000, tail
    print(f"\nop matrix under torch {seen['torch']} from {wheel.name}: {passed.group(0)}")


# One test for the whole round trip: under pytest-xdist (the GPU check runs the suite with -n 4)
# separate tests sharing a module fixture would each build the wheel in their own worker.
def test_wheel_builds_installs_and_runs_outside_the_checkout(tmp_path):
    site, wheel, _ = _build_and_install(tmp_path / "wheel")
    _check_contents(wheel)
    _check_ops(site, tmp_path)
    _check_cli(site, tmp_path)
    _check_under_old_torch(wheel, tmp_path)


def test_make_wheel_installs_only_what_building_needs():
    """Without .venv, `make wheel` makes a venv of its own holding torch, setuptools, wheel and
    ninja: no test or training tools (a dry run, `make -n`: nothing is installed)."""
    for cuda in ("0", "1"):
        done = subprocess.run(["make", "-n", "wheel", "VENV=build/no-such-venv"], cwd=ROOT,
                              env={**_clean_env(), "WGANGP_FAST_WHEEL_CUDA": cuda},
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        installs = [line for line in done.stdout.splitlines() if " install " in line]
        assert installs and all("/wheel-venv/" in line for line in installs), done.stdout
        names = {re.split(r"[=<>\[]", word.strip('"'))[0]
                 for line in installs for word in line.split(" install ", 1)[1].split()
                 if not word.startswith("-")}
        assert names == {"pip", "setuptools", "wheel", "ninja", "torch"}, (cuda, names)
