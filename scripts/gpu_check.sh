#!/usr/bin/env bash
# The commands run on the lent GPU machine (its python3 holds torch, triton, pytest and ninja; no
# network). Each call fits a time budget, GPU_CHECK_BUDGET_S (default 330 s, the machine's start
# not counted): every stage has a time limit, runs only while the budget lasts, and the stages go
# most valuable first, so a slow machine loses the least useful results.
#
#   bash scripts/gpu_check.sh main   (`make gpu-check`): what matters most, in this order
#     build                 the extensions of a prebuilt wheel (dist/wgangp_fast-*.whl; dist/ is
#                           ignored by git, so the GPU tool carries it only when told to) when
#                           its _C_cuda loads and runs here, else built in place for sm_90 only
#                           (TORCH_CUDA_ARCH_LIST=9.0) with every core (MAX_JOBS)
#     tests-steps           the step modes on the GPU: tests/steps/test_steps_gpu.py and the
#                           dropout-mask readings on CUDA (tests/steps/test_dropout_masks.py)
#     tests-non-finite      tests/ops/test_non_finite.py on CUDA tensors
#     tests-gpu-cuda        tests/backends/test_gpu.py (its Triton half is in `more`) and
#     tests-gpu-errors        test_cuda_build.py; the error-path test in a process of its own
#     steps-*               the step suite, one benchmarks/run.py process per stage (each writes
#                           its rows when it ends, so a time limit loses one stage's): the
#                           uncompiled modes in float32, with the mlp28/ctgan iterations; ring8
#                           trained in graph mode (train-ring8-graph); the compiled modes per
#                           critic (an inductor compile takes tens of seconds per critic); bf16
#     step-profile          kernels, GPU-busy time and busy share per step (scripts/step_profile.py)
#   bash scripts/gpu_check.sh more   (`make gpu-check-more`): the op benchmarks, the host cost per
#     call, the step profile, the step stages `main` had no time for, cuda_diag.py, the rest of
#     the test suite, the op matrix on CUDA tensors, Triton's GPU tests
#   bash scripts/gpu_check.sh all    both, in that order
#   GPU_CHECK_STAGES="tests-steps steps-f32"   these stages only (names as in summary.txt)
#
# A stage that passed is recorded under build/gpu_check-state/, keyed by a hash of the tree's
# sources: on a machine still warm from an earlier call, `more` (or a second `main`) skips what
# already passed for the same sources; changed sources (a fix) run everything again.
# GPU_CHECK_REDO=1 ignores the record.
#
# Everything goes into one folder, build/gpu_check/<part> (emptied first; GPU_CHECK_DIR names
# another place for build/gpu_check):
#   summary.txt      one line per stage: ok / FAILED / TIMED OUT / SKIPPED (why), seconds
#   gpu_check.log    the whole transcript; logs/<stage>.log each stage's part of it
#   failures.txt     each failing test's report, written as it fails (a crash keeps it)
#   junit-<stage>.xml
#   results/         <device>-<date>.csv/.md/.png of benchmarks/run.py (for benchmarks/results/),
#                    host-overhead.md, step-profile.md
#   train-ring8-graph/  metrics.json, history.csv, config.json, the pictures
# When $OUT is set (the GPU tool brings back at most 8 files from it, 16 MiB each, named in
# letters, digits, '.', '_' and '-'), $OUT gets four files, rewritten after every stage so that a
# call stopped at its limit still brings back what the stages before it made:
#   gpu_check-<part>.tar.gz   the whole folder above (without the stage logs, which the
#                             transcript repeats, if it would exceed 15 MiB)
#   summary.txt, failures.txt, gpu_check-tail.log (the transcript's last 2 MiB)
# Unpack with `tar -xzf gpu_check-<part>.tar.gz` (a folder <part>/).
#
# Without a GPU every GPU stage says "SKIPPED (no CUDA device visible)". GPU_CHECK_DRY_RUN=1 (on
# the CPU) runs each stage's command in a CPU-sized form instead: pytest stages collect their
# tests only, benchmarks run one round of the eager mode on the first critic, training runs 20
# steps: it checks this script and its command lines before a GPU session.
#
# Environment: PYTHON (default python3), GPU_CHECK_BUDGET_S, GPU_CHECK_STAGES, GPU_CHECK_REDO,
# GPU_CHECK_BUILD (auto | wheel | source), GPU_CHECK_DRY_RUN, GPU_CHECK_DIR, TORCH_CUDA_ARCH_LIST,
# MAX_JOBS, OUT.
set -u -o pipefail

cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
PART=${1:-main}
PY=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET_S:-330}
DRY=${GPU_CHECK_DRY_RUN:-0}
BUILD_FROM=${GPU_CHECK_BUILD:-auto}
START=$(date +%s)
# Seconds kept back at the end for the chart and the file list.
RESERVE=10

case $PART in
  main | more | all) ;;
  *)
    echo "gpu_check.sh: PART must be main, more or all, got '$PART'" >&2
    exit 2
    ;;
esac
case $BUILD_FROM in
  auto | wheel | source) ;;
  *)
    echo "gpu_check.sh: GPU_CHECK_BUILD must be auto, wheel or source, got '$BUILD_FROM'" >&2
    exit 2
    ;;
esac

WORK=${GPU_CHECK_DIR:-$ROOT/build/gpu_check}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
DEST=$WORK/$PART
rm -rf "$DEST"
mkdir -p "$DEST/logs" "$DEST/results"
BACK=
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  BACK=$(cd "$OUT" && pwd)
fi
RESULTS=$DEST/results
SUMMARY=$DEST/summary.txt
STATE=$ROOT/build/gpu_check-state
mkdir -p "$STATE"

export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
# The package is imported from the source tree: the extensions are built (or unpacked) in place.
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
# Compiled kernels kept in the tree's build/ (ignored by git): a later call on the same warm
# machine reuses them instead of compiling again.
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$ROOT/build/inductor-cache}
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$ROOT/build/triton-cache}
# PEP 668 system interpreters refuse plain installs; this machine is disposable.
export PIP_BREAK_SYSTEM_PACKAGES=1

note() { echo "$*" | tee -a "$SUMMARY"; }

# pack: what the folder holds now, as the few files the GPU tool brings back from $OUT (see the
# top); a no-op without $OUT. Each file is written beside its place and moved in, so a call
# stopped while packing keeps the previous pack.
PACK_LIMIT=$((15 * 1024 * 1024))
pack() {
  [ -n "$BACK" ] || return 0
  local tmp=$WORK/.pack-$PART.tar.gz
  tar -czf "$tmp" -C "$WORK" "$PART" 2>/dev/null
  if [ "$(stat -c %s "$tmp" 2>/dev/null || echo 0)" -gt "$PACK_LIMIT" ]; then
    tar -czf "$tmp" -C "$WORK" --exclude="$PART/logs" "$PART" 2>/dev/null
  fi
  mv -f "$tmp" "$BACK/gpu_check-$PART.tar.gz"
  local f
  for f in summary.txt failures.txt; do
    [ -f "$DEST/$f" ] && cp "$DEST/$f" "$BACK/.$f.new" && mv -f "$BACK/.$f.new" "$BACK/$f"
  done
  if [ -f "$DEST/gpu_check.log" ]; then
    tail -c 2097152 "$DEST/gpu_check.log" >"$BACK/.tail.new" &&
      mv -f "$BACK/.tail.new" "$BACK/gpu_check-tail.log"
  fi
  return 0
}

left() { echo $((BUDGET - ($(date +%s) - START) - RESERVE)); }

# The sources that make a result: a stage recorded as passed for this key is not run again.
tree_key() {
  find setup.py pyproject.toml csrc wgangp_fast tests benchmarks scripts -type f \
    \( -name '*.py' -o -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh' \
    -o -name '*.sh' -o -name '*.toml' \) -print0 2>/dev/null | sort -z | xargs -0 cat |
    sha256sum | cut -c1-16
}
KEY=$(tree_key)
DONE=$STATE/passed-$KEY.txt

GPU=0
if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  GPU=1
fi

# stage NAME CAP MIN COMMAND...: runs COMMAND under a limit of CAP seconds or what the budget
# has left, whichever is less (skipped when that is under MIN seconds); its output goes to the
# transcript and logs/NAME.log; the outcome to the summary. Returns COMMAND's status.
stage() {
  local name=$1 cap=$2 min=$3
  shift 3
  if [ "${GPU_CHECK_REDO:-0}" != 1 ] && [ "$DRY" != 1 ] && grep -qx "$name" "$DONE" 2>/dev/null
  then
    note "$name: SKIPPED (passed in an earlier call on this machine, same sources: $DONE)"
    return 0
  fi
  local budget_left limit
  budget_left=$(left)
  limit=$((cap < budget_left ? cap : budget_left))
  if ((limit < min)); then
    note "$name: SKIPPED (time budget spent: ${budget_left}s left, the stage needs ${min}s)"
    return 99
  fi
  echo
  echo "=== $name (limit ${limit}s, $(left)s of the budget left): $*"
  local t0 rc took
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$DEST/logs/$name.log"
  rc=${PIPESTATUS[0]}
  took=$(($(date +%s) - t0))
  if ((rc == 0)); then
    note "$name: ok (${took}s)"
    [ "$DRY" = 1 ] || echo "$name" >>"$DONE"
  elif ((rc == 124 || rc == 137)); then
    note "$name: TIMED OUT after ${took}s"
  else
    note "$name: FAILED with exit status $rc (${took}s)"
  fi
  return "$rc"
}

# gpu_only NAME: true when a GPU stage can run here (or in a dry run); says why not otherwise.
gpu_only() {
  if ((GPU == 0)) && [ "$DRY" != 1 ]; then
    note "$1: SKIPPED (no CUDA device visible)"
    return 1
  fi
}

# pytest_stage NAME CAP [VAR=VALUE...] PYTEST-ARGS...
pytest_stage() {
  local name=$1 cap=$2
  shift 2
  gpu_only "$name" || return 0
  local envs=()
  while [[ $# -gt 0 && $1 == *=* && $1 != -* ]]; do
    envs+=("$1")
    shift
  done
  local extra=()
  if [ "$DRY" = 1 ]; then
    envs+=(WGANGP_FAST_GPU_TESTS_DRY_RUN=1)
    extra=(--collect-only)
  fi
  stage "$name" "$cap" 15 env WGANGP_FAST_FAILURE_LOG="$DEST/failures.txt" \
    ${envs[@]+"${envs[@]}"} "$PY" -m pytest -q -ra --tb=short -p no:cacheprovider \
    --junitxml="$DEST/junit-$name.xml" ${extra[@]+"${extra[@]}"} "$@"
}

# steps_stage NAME CAP MIN "CRITICS" "DTYPES" "MODES" ITERATIONS(yes|no): one run of the step
# suite (benchmarks/run.py --suite steps) into results/.
steps_stage() {
  local name=$1 cap=$2 min=$3 critics=$4 dtypes=$5 modes=$6 iterations=$7
  gpu_only "$name" || return 0
  local device=(--device cuda) flag=--iterations
  [ "$iterations" = yes ] || flag=--no-iterations
  if [ "$DRY" = 1 ]; then
    device=(--device cpu --repeats 1)
    critics=${critics%% *}
    modes=eager
  fi
  # shellcheck disable=SC2086
  stage "$name" "$cap" "$min" "$PY" benchmarks/run.py --suite steps "${device[@]}" \
    --critics $critics --dtypes $dtypes --modes $modes "$flag" --no-plot --out "$RESULTS"
}

info() {
  echo "=== machine ($PART, budget ${BUDGET}s, sources $KEY)"
  date -u
  nvidia-smi 2>&1 || echo "nvidia-smi: not available"
  echo "cpus: $(nproc)"
  free -g 2>/dev/null | head -2
  "$PY" - <<'EOF'
import platform
import torch
print("python", platform.python_version())
print("torch", torch.__version__, "cuda", torch.version.cuda, "available",
      torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, f"sm_{p.major}{p.minor}", p.multi_processor_count, "SMs",
          f"{p.total_memory / 2**30:.1f} GiB")
try:
    import triton
    print("triton", triton.__version__)
except ImportError as err:
    print("triton missing:", err)
EOF
  local nvcc home=${CUDA_HOME:-/usr/local/cuda}
  nvcc=$(command -v nvcc || true)
  [ -z "$nvcc" ] && [ -x "$home/bin/nvcc" ] && nvcc=$home/bin/nvcc
  if [ -n "$nvcc" ]; then
    "$nvcc" --version | tail -2
  else
    echo "nvcc: not found (no CUDA toolkit: the cuda backend cannot be built here)"
  fi
  echo "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS GPU=$GPU DRY=$DRY"
}

# ---------------------------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------------------------

# Whether the extensions in wgangp_fast/ load, and on a GPU run the cuda backend's kernels.
# shellcheck disable=SC2317  # run by st_build through bash -c
extension_runs() {
  "$PY" - <<'EOF'
import os
import pprint
import sys
import torch
import wgangp_fast
from wgangp_fast import backends
tree = os.path.realpath("wgangp_fast")
where = os.path.dirname(os.path.realpath(wgangp_fast.__file__))
if where != tree:
    sys.exit(f"wgangp_fast is imported from {where}, not from this tree: uninstall it")
# The libraries hold no Python module (stable ABI): load them as the package does.
def check(lib):
    if not lib.loaded:
        sys.exit(f"the library {lib.name}: {lib.error}")
    # not another checkout's build (an editable install's finder can point there)
    if os.path.dirname(os.path.realpath(lib.path)) != tree:
        sys.exit(f"the library {lib.name} found is {lib.path}, not this tree's")
    print("loaded", lib.path)
check(backends._cpu_extension())
if torch.cuda.is_available():
    check(backends._cuda_extension())
    print("the CUDA library holds", backends.cuda_targets())
    real, fake = torch.randn(2, 8, 5, device="cuda").unbind(0)
    x = wgangp_fast.interpolate(real, fake, backend="cuda")
    pen = wgangp_fast.gradient_norm_penalty(x, backend="cuda")
    torch.cuda.synchronize()
    print("the cuda backend runs:", float(pen))
pprint.pprint(wgangp_fast.backend_status())
EOF
}

# shellcheck disable=SC2317  # run by st_build through bash -c
build_key() {
  (
    "$PY" -c "import sys, torch; print(sys.version, torch.__version__)" 2>/dev/null
    echo "$TORCH_CUDA_ARCH_LIST $GPU"
    find setup.py csrc -type f -print0 | sort -z | xargs -0 cat
  ) | sha256sum | cut -c1-16
}

# The extensions of the newest dist/wgangp_fast-*.whl, unpacked into wgangp_fast/ (the tree's
# Python files stay: a wheel whose Python files differ from the tree's was built from other
# sources, and is not taken unless GPU_CHECK_BUILD=wheel).
# shellcheck disable=SC2317  # run by st_build through bash -c
unpack_wheel() {
  local wheel=$1
  "$PY" - "$wheel" "$BUILD_FROM" <<'EOF'
import sys
import zipfile
from pathlib import Path

wheel, mode = Path(sys.argv[1]), sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = z.namelist()
    differ = [n for n in names if n.startswith("wgangp_fast/") and n.endswith(".py")
              and (not Path(n).is_file() or Path(n).read_bytes() != z.read(n))]
    if differ and mode != "wheel":
        print(f"{wheel.name}: {len(differ)} Python files differ from the tree's (e.g. "
              f"{differ[0]}): built from other sources, not taken (GPU_CHECK_BUILD=wheel "
              f"takes it)")
        sys.exit(1)
    libs = [n for n in names if n.startswith("wgangp_fast/") and n.endswith(".so")]
    if not libs:
        print(f"{wheel.name}: holds no extension")
        sys.exit(1)
    for n in libs:
        Path(n).write_bytes(z.read(n))
    print(f"{wheel.name}: unpacked {', '.join(libs)}"
          + (f" ({len(differ)} Python files differ from the tree's)" if differ else ""))
EOF
}

# shellcheck disable=SC2317  # run by st_build through bash -c
build_from_wheel() {
  local wheel
  # shellcheck disable=SC2012  # the newest by time; wheel names are plain
  wheel=$(ls -t dist/wgangp_fast-*.whl 2>/dev/null | head -1)
  if [ -z "$wheel" ]; then
    echo "no dist/wgangp_fast-*.whl"
    return 1
  fi
  # the extensions in place, if any, come back when the wheel's do not run
  local keep=$STATE/so-before-wheel
  rm -rf "$keep"
  mkdir -p "$keep"
  mv wgangp_fast/_C*.so "$keep/" 2>/dev/null
  if unpack_wheel "$wheel"; then
    extension_runs && return 0
    echo "$wheel: its extensions do not run here"
  fi
  rm -f wgangp_fast/_C*.so
  mv "$keep"/*.so wgangp_fast/ 2>/dev/null
  return 1
}

# shellcheck disable=SC2317  # run by st_build through bash -c
build_from_source() {
  local flag=WGANGP_FAST_FORCE_CUDA=1
  # No GPU here: the CPU extension only, not minutes of nvcc for nothing.
  ((GPU == 1)) || flag=WGANGP_FAST_SKIP_CUDA_BUILD=1
  if "$PY" -c 'import sys, setuptools; sys.exit(int(setuptools.__version__.split(".")[0]) >= 77)'
  then
    # setuptools < 77 refuses pyproject.toml's SPDX license; build_ext needs none of its
    # metadata, so build in a copy without it
    local stage=$STATE/build-stage
    echo "setuptools < 77: building the extensions in $stage, without pyproject.toml"
    rm -rf "$stage" && mkdir -p "$stage/wgangp_fast" && cp -r setup.py csrc "$stage/" &&
      (cd "$stage" && env "$flag" "$PY" setup.py -q build_ext --inplace) &&
      cp "$stage"/wgangp_fast/_C*.so wgangp_fast/ && extension_runs
    return
  fi
  env "$flag" "$PY" setup.py -q build_ext --inplace && extension_runs
}

# shellcheck disable=SC2317  # run by st_build through bash -c
build_body() {
  local key marker
  key=$(build_key)
  marker=$STATE/built-$key
  if [ -f "$marker" ] && extension_runs; then
    echo "build: the extensions in place were built here from these sources ($key) and run"
    return 0
  fi
  if ((GPU == 0)) && extension_runs; then
    # a developer's machine: its own build stays
    echo "build: no GPU here and the extensions in place load: nothing built"
    return 0
  fi
  if [ "$BUILD_FROM" != source ] && build_from_wheel; then
    touch "$marker"
    return 0
  fi
  if [ "$BUILD_FROM" = wheel ]; then
    echo "build: GPU_CHECK_BUILD=wheel, and no wheel's extensions run here"
    return 1
  fi
  echo "build: from source, MAX_JOBS=$MAX_JOBS, TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"
  build_from_source || return 1
  touch "$marker"
  # Stream code the CUDA extension carries itself instead of taking it from libstdc++ (a build
  # with its own copy of std::ostream::_M_insert<long> crashed formatting integers; see
  # csrc/common/geometry.h).
  for so in wgangp_fast/_C*.so; do
    echo "$so: $(nm -C --defined-only "$so" 2>/dev/null | grep -cE 'std::(basic_)?ostream|num_put') stream symbols defined"
    ldd "$so" 2>/dev/null | grep -E 'libstdc\+\+|libgcc' || true
  done
}

st_build() {
  # in a child shell, which `timeout` can stop
  export PY STATE BUILD_FROM GPU DRY
  export -f extension_runs build_key unpack_wheel build_from_wheel build_from_source build_body
  # The record of passed stages does not apply: the build has its own (build_key).
  GPU_CHECK_REDO=1 stage build 240 10 bash -c build_body
}

# ---------------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------------

ERRORS="test_kernel_ops_reject_mixed_devices_and_wrong_dtypes"

MASKS_CUDA=tests/steps/test_dropout_masks.py::test_forward_gradient_and_double_backward_share_one_mask_cuda
st_tests_steps() {
  pytest_stage tests-steps 150 tests/steps/test_steps_gpu.py "$MASKS_CUDA" --durations=10
}
st_tests_non_finite() {
  pytest_stage tests-non-finite 45 WGANGP_FAST_TEST_DEVICE=cuda tests/ops/test_non_finite.py
}
st_tests_gpu_cuda() {
  pytest_stage tests-gpu-cuda 90 tests/backends/test_gpu.py tests/backends/test_cuda_build.py \
    -k "not triton and not $ERRORS"
}
st_tests_gpu_errors() {
  if ! pytest_stage tests-gpu-errors 40 tests/backends/test_gpu.py -k "$ERRORS" &&
    ((GPU == 1)) && command -v cuda-gdb >/dev/null; then
    # The same test again under cuda-gdb (installed on the lent machines): the native backtrace
    # of a crash, which pytest's faulthandler cannot give.
    stage error-paths-backtrace 90 20 cuda-gdb -q -batch -ex "set pagination off" -ex run \
      -ex "bt 40" --args "$PY" -m pytest -q -p no:cacheprovider tests/backends/test_gpu.py \
      -k "$ERRORS"
  fi
}

# The step suite. Uncompiled modes first (seconds per critic), then the compiled ones: each
# CriticStep / TrainStep compiles with inductor at its first call (tens of seconds), and the
# rows carry that time as setup_s.
UNCOMPILED="eager graph"
COMPILED="compile compile+graph"
st_steps_f32() { steps_stage steps-f32 75 20 "mlp28 ctgan" float32 "$UNCOMPILED" yes; }
st_steps_f32_conv() { steps_stage steps-f32-conv 60 20 "conv32 conv64" float32 "$UNCOMPILED" no; }
st_steps_bf16() { steps_stage steps-bf16 75 20 "mlp28 ctgan" bfloat16 "$UNCOMPILED" yes; }
st_steps_bf16_conv() { steps_stage steps-bf16-conv 60 20 "conv32 conv64" bfloat16 "$UNCOMPILED" no; }
compiled() {  # compiled CRITIC DTYPE
  local iterations=no
  case $1 in mlp28 | ctgan) iterations=yes ;; esac
  steps_stage "steps-compiled-$2-$1" 150 60 "$1" "$2" "$COMPILED" "$iterations"
}
st_compiled_f32_mlp28() { compiled mlp28 float32; }
st_compiled_f32_ctgan() { compiled ctgan float32; }
st_compiled_f32_conv32() { compiled conv32 float32; }
st_compiled_f32_conv64() { compiled conv64 float32; }
st_compiled_bf16_mlp28() { compiled mlp28 bfloat16; }
st_compiled_bf16_ctgan() { compiled ctgan bfloat16; }
st_compiled_bf16_conv32() { compiled conv32 bfloat16; }
st_compiled_bf16_conv64() { compiled conv64 bfloat16; }

st_train_ring8_graph() {
  local name=train-ring8-graph
  gpu_only "$name" || return 0
  local out=$DEST/$name args=(--device cuda --step-mode graph)
  [ "$DRY" = 1 ] && args=(--device cpu --step-mode eager --steps 20 --threads 1)
  # The preset (1800 steps at batch 512, seed 42), to set beside the CPU's
  # benchmarks/results/quality-ring8-cpu-2cores-20261203.md (seed 42: 8/8 modes, 96.8%)
  stage "$name" 120 30 "$PY" -m wgangp_fast train --dataset ring8 "${args[@]}" --out "$out" \
    --checkpoint-every 0 --no-progress
  # the final checkpoint (1 MB) is not needed to judge the run
  rm -f "$out/checkpoint.pt"
}

st_ops() {
  gpu_only ops || return 0
  local args=(--device cuda)
  [ "$DRY" = 1 ] && args=(--device cpu --quick --repeats 1 --sizes 1)
  stage ops 200 30 "$PY" benchmarks/run.py --suite ops "${args[@]}" --no-plot --out "$RESULTS"
}
st_host_overhead() {
  gpu_only host-overhead || return 0
  local args=(--device cuda)
  [ "$DRY" = 1 ] && args=(--device cpu --calls 20 --repeats 3)
  stage host-overhead 60 15 "$PY" benchmarks/host_overhead.py "${args[@]}" &&
    cp "$DEST/logs/host-overhead.log" "$RESULTS/host-overhead.md"
}
st_step_profile() {
  # per step: kernels, GPU-busy time and its share of a queued call (what bounds a step that
  # misses its speed target)
  gpu_only step-profile || return 0
  local args=(--device cuda --modes reference eager graph compile+graph)
  [ "$DRY" = 1 ] && args=(--device cpu --critics mlp28 --modes reference eager --calls 2)
  stage step-profile 120 30 "$PY" scripts/step_profile.py "${args[@]}" \
    --out "$RESULTS/step-profile.md"
}
st_cuda_diag() {
  # Each kernel op of cuda and triton alone: error against the reference, device time and its
  # share of copy bandwidth with the host overhead hidden (the benchmarks' figures include it).
  if ((GPU == 0)); then
    note "cuda-diag: SKIPPED (no CUDA device visible)"
    return 0
  fi
  stage cuda-diag 90 15 "$PY" scripts/cuda_diag.py
}

# Four pytest workers where pytest-xdist is installed (it is on the lent machines): these are
# bound by host work, and the machine has 16 cores.
xdist() {
  "$PY" -c "import xdist" 2>/dev/null && [ "$DRY" != 1 ] && echo "-n 4"
}
st_suite() {
  # everything but what the GPU stages ran (its gpu-marked tests run here, and "auto" on CUDA)
  # shellcheck disable=SC2046
  pytest_stage suite 180 tests -m "not triton_interp" $(xdist) \
    --ignore=tests/backends/test_gpu.py --ignore=tests/backends/test_cuda_build.py \
    --ignore=tests/steps/test_steps_gpu.py --deselect "$MASKS_CUDA"
}
st_cuda_matrix() {
  # the op matrix (tests/cases.py) on CUDA tensors: every dtype, shape and parameter
  local shared
  shared=$(grep -rlE "from \.+cases import" tests --include='test_*.py' |
    grep -v "tests/backends/test_gpu.py" | sort | tr '\n' ' ')
  # shellcheck disable=SC2046,SC2086
  pytest_stage cuda-matrix 180 WGANGP_FAST_TEST_DEVICE=cuda $shared -m "not triton_interp" \
    $(xdist)
}
st_tests_gpu_triton() {
  # one process: its >2^31-element test needs 18 GiB and checks free memory first, which
  # parallel workers would race
  pytest_stage tests-gpu-triton 240 tests/backends/test_gpu.py --durations=15 \
    -k "triton and not $ERRORS"
}

MAIN="build tests-steps tests-non-finite tests-gpu-cuda tests-gpu-errors steps-f32 steps-f32-conv
  train-ring8-graph steps-compiled-float32-mlp28 steps-compiled-float32-ctgan steps-bf16
  steps-bf16-conv steps-compiled-float32-conv32 steps-compiled-float32-conv64 step-profile"
MORE="build ops host-overhead step-profile steps-bf16 steps-bf16-conv steps-compiled-float32-conv32
  steps-compiled-float32-conv64 steps-compiled-bfloat16-mlp28 steps-compiled-bfloat16-ctgan
  cuda-diag suite cuda-matrix tests-gpu-triton steps-compiled-bfloat16-conv32
  steps-compiled-bfloat16-conv64"

run_named() {
  case $1 in
    build) st_build ;;
    tests-steps) st_tests_steps ;;
    tests-non-finite) st_tests_non_finite ;;
    tests-gpu-cuda) st_tests_gpu_cuda ;;
    tests-gpu-errors) st_tests_gpu_errors ;;
    steps-f32) st_steps_f32 ;;
    steps-f32-conv) st_steps_f32_conv ;;
    steps-bf16) st_steps_bf16 ;;
    steps-bf16-conv) st_steps_bf16_conv ;;
    steps-compiled-float32-mlp28) st_compiled_f32_mlp28 ;;
    steps-compiled-float32-ctgan) st_compiled_f32_ctgan ;;
    steps-compiled-float32-conv32) st_compiled_f32_conv32 ;;
    steps-compiled-float32-conv64) st_compiled_f32_conv64 ;;
    steps-compiled-bfloat16-mlp28) st_compiled_bf16_mlp28 ;;
    steps-compiled-bfloat16-ctgan) st_compiled_bf16_ctgan ;;
    steps-compiled-bfloat16-conv32) st_compiled_bf16_conv32 ;;
    steps-compiled-bfloat16-conv64) st_compiled_bf16_conv64 ;;
    train-ring8-graph) st_train_ring8_graph ;;
    ops) st_ops ;;
    host-overhead) st_host_overhead ;;
    step-profile) st_step_profile ;;
    cuda-diag) st_cuda_diag ;;
    suite) st_suite ;;
    cuda-matrix) st_cuda_matrix ;;
    tests-gpu-triton) st_tests_gpu_triton ;;
  esac
}

# shellcheck disable=SC2086  # the lists are words
STAGES=$(printf '%s\n' $MAIN $MORE | awk '!seen[$0]++' | tr '\n' ' ')
for name in ${GPU_CHECK_STAGES:-}; do
  if [[ " $STAGES" != *" $name "* ]]; then
    echo "gpu_check.sh: GPU_CHECK_STAGES names no stage '$name'; the stages: $STAGES" >&2
    exit 2
  fi
done

main() {
  note "gpu_check $PART: $(date -u +%Y-%m-%dT%H:%M:%SZ), budget ${BUDGET}s, sources $KEY"
  info
  local names
  if [ -n "${GPU_CHECK_STAGES:-}" ]; then
    names=$GPU_CHECK_STAGES
  elif [ "$PART" = main ]; then
    names=$MAIN
  elif [ "$PART" = more ]; then
    names=$MORE
  else
    names="$MAIN $MORE"
  fi
  local name seen=" "
  for name in $names; do
    # `all` names build and the shared step stages twice
    [[ $seen == *" $name "* ]] && continue
    seen="$seen$name "
    if [ "$name" = build ]; then
      st_build || note "build: the extensions did not build; the stages below test what loads"
    else
      run_named "$name"
    fi
    pack
  done
  # The chart of every step and op row of this call (the runs above skip theirs: one is enough).
  local csv
  for csv in "$RESULTS"/*.csv; do
    [ -f "$csv" ] || continue
    timeout 30 "$PY" benchmarks/run.py --render "$csv" >/dev/null 2>&1 ||
      echo "chart of $csv: not drawn (matplotlib missing?)"
  done
  note "gpu_check $PART: done in $(($(date +%s) - START))s"
  ! grep -qE "FAILED|TIMED OUT" "$SUMMARY"
}

# Stopped from outside (a time limit's SIGTERM): pack what there is, then stop.
trap 'pack; exit 143' TERM INT
main 2>&1 | tee "$DEST/gpu_check.log"
status=${PIPESTATUS[0]}
echo "results in $DEST ($(du -sh "$DEST" | cut -f1)):" "$(cd "$DEST" && echo *)"
pack
[ -z "$BACK" ] || echo "brought back from $BACK:" "$(cd "$BACK" && echo *)"
exit "$status"
