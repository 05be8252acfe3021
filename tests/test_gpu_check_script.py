"""scripts/gpu_check.sh (`make gpu-check`) as the GPU tool sees it, checked on the CPU in its dry run.

The tool brings back at most 8 files from $OUT, each at most 16 MiB, no more than two folders
down, named in letters, digits, '.', '_' and '-'; what a call leaves beyond that is lost. These
tests run two cheap stages (a pytest collection and a 20-step training run: together more files
than that) and read what $OUT holds, after a whole call and after one stopped from outside.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
STAGES = "build tests-non-finite train-ring8-graph"
NAME = re.compile(r"^[A-Za-z0-9._-]+$")
MAX_FILES, MAX_BYTES = 8, 16 * 2**20

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or not (ROOT / "wgangp_fast").is_dir(),
    reason="gpu_check.sh is a Linux bash script run from the source tree")


def _env(tmp_path: Path, stages: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(GPU_CHECK_DRY_RUN="1", GPU_CHECK_STAGES=stages, OUT=str(tmp_path / "out"),
               GPU_CHECK_DIR=str(tmp_path / "work"), PYTHON=sys.executable,
               GPU_CHECK_BUDGET_S="300")
    return env


def _brought_back(out: Path) -> list[Path]:
    """What the GPU tool would bring back, asserting its limits hold."""
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files, f"{out} is empty"
    assert len(files) <= MAX_FILES, f"{len(files)} files in $OUT: {sorted(map(str, files))}"
    for p in files:
        rel = p.relative_to(out)
        assert len(rel.parts) <= 3, f"{rel} is more than two folders down"
        assert all(NAME.match(part) for part in rel.parts), f"{rel}: a name the tool refuses"
        assert p.stat().st_size <= MAX_BYTES, f"{rel}: {p.stat().st_size} bytes"
    return files


def _members(tarball: Path) -> dict[str, bytes]:
    with tarfile.open(tarball) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_a_whole_call_brings_everything_back_in_eight_files(tmp_path):
    done = subprocess.run(["bash", str(SCRIPT), "main"], env=_env(tmp_path, STAGES),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    out = tmp_path / "out"
    names = {p.name for p in _brought_back(out)}
    assert {"gpu_check-main.tar.gz", "summary.txt", "gpu_check-tail.log"} <= names, names

    made = tmp_path / "work" / "main"
    members = _members(out / "gpu_check-main.tar.gz")
    # every file the call made is in the pack, byte for byte
    want = {f"main/{p.relative_to(made)}" for p in made.rglob("*") if p.is_file()}
    assert len(want) > MAX_FILES  # the point: more than the tool would bring back one by one
    assert want == set(members), sorted(want ^ set(members))
    for name in ("main/summary.txt", "main/train-ring8-graph/metrics.json",
                 "main/logs/tests-non-finite.log", "main/junit-tests-non-finite.xml"):
        assert name in members, name
    summary = members["main/summary.txt"].decode()
    # the libraries built in place load (the stable-ABI libraries hold no Python module)
    assert re.search(r"^build: ok", summary, re.M), members["main/logs/build.log"].decode()
    assert re.search(r"^tests-non-finite: ok", summary, re.M), summary
    assert re.search(r"^train-ring8-graph: ok", summary, re.M), summary
    assert (out / "summary.txt").read_text() == summary
    assert "=== train-ring8-graph" in (out / "gpu_check-tail.log").read_text()


def test_a_call_stopped_from_outside_keeps_the_stages_before(tmp_path):
    # training first: the pack written after it must survive a SIGTERM to the whole call
    proc = subprocess.Popen(["bash", str(SCRIPT), "main"],
                            env=_env(tmp_path, "train-ring8-graph tests-non-finite"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    tarball = tmp_path / "out" / "gpu_check-main.tar.gz"
    try:
        deadline = time.monotonic() + 300
        while not tarball.exists():
            assert proc.poll() is None, f"the call ended (rc {proc.returncode}) before a pack"
            assert time.monotonic() < deadline, "no pack after 300 s"
            time.sleep(0.2)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    _brought_back(tmp_path / "out")
    members = _members(tarball)
    assert re.search(r"^train-ring8-graph: ok", members["main/summary.txt"].decode(), re.M)
    assert "main/train-ring8-graph/metrics.json" in members


def test_the_build_stage_takes_the_libraries_of_a_wheel_in_dist(tmp_path):
    """A tree without compiled libraries and a wheel in dist/ (what `make wheel` writes; the GPU
    tool carries dist/ when told to): the build stage unpacks the wheel's libraries and checks that
    they load, instead of compiling (minutes of nvcc on the GPU machine)."""
    libs = sorted(ROOT.glob("wgangp_fast/_C*.so"))
    if not libs:
        pytest.skip("no compiled library in the tree (make build)")
    tree = tmp_path / "tree"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tree / name)
    assert not list(tree.glob("wgangp_fast/_C*.so"))
    # a wheel is a zip: the tree's Python files and the libraries, where a wheel has them
    (tree / "dist").mkdir()
    wheel = tree / "dist" / "wgangp_fast-0.1.0-cp39-abi3-linux_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for py in sorted((tree / "wgangp_fast").rglob("*.py")):
            z.write(py, py.relative_to(tree).as_posix())
        for lib in libs:
            z.write(lib, f"wgangp_fast/{lib.name}")
    env = _env(tmp_path, "build")
    env["PYTHONPATH"] = ""
    done = subprocess.run(["bash", str(tree / "scripts" / "gpu_check.sh"), "main"], env=env,
                          capture_output=True, text=True, timeout=300)
    log = (tmp_path / "work" / "main" / "logs" / "build.log").read_text()
    assert done.returncode == 0, log + done.stdout[-3000:]
    assert re.search(r"^build: ok", (tmp_path / "out" / "summary.txt").read_text(), re.M)
    assert f"{wheel.name}: unpacked" in log, log
    assert "build: from source" not in log, log
    assert sorted(p.name for p in tree.glob("wgangp_fast/_C*.so")) == [p.name for p in libs]
    assert f"loaded {tree / 'wgangp_fast' / '_C'}" in log, log
