#!/usr/bin/env bash
# The one command run on the GPU machine (`make gpu-check`): machine and versions, the build with
# the CUDA extension forced, the GPU tests, the op and step benchmarks, the rest of the test suite
# and the shared op matrix on CUDA tensors. Every stage has a time limit and the whole run fits
# in GPU_CHECK_BUDGET_S seconds (default 570); stages run most valuable first, so a slow machine
# loses the least useful results. Needs no network.
#
# Logs and results go to build/gpu_check/ and, when $OUT names a folder, into it (up to 6 files):
#   gpu_check.log   the whole transcript          summary.txt   one line per stage
#   results.tar.gz  junit XML + benchmark CSV/markdown/PNG      <device>-<date>.csv/.md
#   failures.txt    each failing test's report, written as it fails
#
# Environment: PYTHON (default python3), TORCH_CUDA_ARCH_LIST (default 9.0: H100/H200),
# GPU_CHECK_BUDGET_S, OUT.
set -u -o pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET_S:-570}
LOGS=$ROOT/build/gpu_check
RESULTS=$ROOT/benchmarks/results
START=$(date +%s)
# Seconds kept back at the end for collecting the results.
RESERVE=15

export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
# The package is imported from the source tree even where `pip install -e` is not possible.
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1

rm -rf "$LOGS"
mkdir -p "$LOGS" "$RESULTS"
SUMMARY=$LOGS/summary.txt
# Results newer than this marker are this run's.
touch "$LOGS/.start"

note() { echo "$*" | tee -a "$SUMMARY"; }

# stage NAME CAP COMMAND...: runs COMMAND under a limit of CAP seconds or what the budget has
# left, whichever is less; records the outcome in the summary; returns COMMAND's status.
stage() {
  local name=$1 cap=$2
  shift 2
  local left=$((BUDGET - ($(date +%s) - START) - RESERVE))
  local limit=$((cap < left ? cap : left))
  if ((limit < 10)); then
    note "$name: SKIPPED (time budget spent)"
    return 99
  fi
  echo
  echo "=== $name (limit ${limit}s): $*"
  local t0 rc
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@"
  rc=$?
  local took=$(($(date +%s) - t0))
  if ((rc == 0)); then
    note "$name: ok (${took}s)"
  elif ((rc == 124 || rc == 137)); then
    note "$name: TIMED OUT after ${took}s"
  else
    note "$name: FAILED with exit status $rc (${took}s)"
  fi
  return $rc
}

# pytest_stage NAME CAP [VAR=VALUE...] PYTEST-ARGS...
pytest_stage() {
  local name=$1 cap=$2
  shift 2
  local envs=()
  while [[ $# -gt 0 && $1 == *=* && $1 != -* ]]; do
    envs+=("$1")
    shift
  done
  stage "$name" "$cap" env WGANGP_FAST_FAILURE_LOG="$LOGS/failures.txt" ${envs[@]+"${envs[@]}"} \
    "$PY" -m pytest -q -ra --tb=short -p no:cacheprovider --junitxml="$LOGS/junit-$name.xml" "$@"
}

info() {
  echo "=== machine"
  date -u
  nvidia-smi || echo "nvidia-smi failed"
  echo "cpus: $(nproc)"
  free -g 2>/dev/null | head -2
  "$PY" - <<'EOF'
import platform
import torch
print("python", platform.python_version())
print("torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available())
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
  local nvcc
  nvcc=$(command -v nvcc || true)
  local home=${CUDA_HOME:-/usr/local/cuda}
  [ -z "$nvcc" ] && [ -x "$home/bin/nvcc" ] && nvcc=$home/bin/nvcc
  if [ -n "$nvcc" ]; then
    "$nvcc" --version | tail -2
  else
    echo "nvcc: not found (no CUDA toolkit: the cuda backend cannot be built here)"
  fi
  "$PY" -m pip --version || true
  # Which libstdc++ the compiler links: where it finds no shared libstdc++.so it takes the static
  # archive, and an extension with its own copy loses (here: crashed on) integers in messages.
  local cxx=${CXX:-c++}
  echo "$cxx: $("$cxx" --version 2>&1 | head -1); libstdc++.so -> $("$cxx" -print-file-name=libstdc++.so 2>&1); libstdc++.a -> $("$cxx" -print-file-name=libstdc++.a 2>&1)"
  echo "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST budget=${BUDGET}s"
}

build() {
  local pip=("$PY" -m pip install --no-build-isolation --no-deps -e .)
  # PEP 668 system interpreters refuse plain installs; this machine is disposable.
  export PIP_BREAK_SYSTEM_PACKAGES=1
  if stage build-cuda 300 env WGANGP_FAST_FORCE_CUDA=1 "${pip[@]}"; then
    return 0
  fi
  note "build-cuda: the CUDA extension did not build; testing the other backends only"
  stage build-cpu 240 env WGANGP_FAST_SKIP_CUDA_BUILD=1 "${pip[@]}" && return 0
  stage build-inplace 240 env WGANGP_FAST_SKIP_CUDA_BUILD=1 "$PY" setup.py build_ext --inplace
}

benchmarks() {
  if ! gpu_visible; then
    note "benchmarks: SKIPPED (no CUDA device visible)"
    return 0
  fi
  if [ ! -f benchmarks/run.py ]; then
    note "benchmarks: SKIPPED (benchmarks/run.py is missing from this checkout)"
    return 0
  fi
  # Several runs: each writes its rows as soon as it ends, so a time limit in a later one keeps
  # the earlier ones'; run.py merges them into one CSV and markdown (each run's paired ratios are
  # measured side by side within it). First the whole-step modes that need no compiling, with
  # whole iterations; then the compiled modes (inductor compiles for tens of seconds each).
  stage bench-steps-graph 170 "$PY" benchmarks/run.py --device cuda --suite steps \
    --dtypes float32 --modes eager graph --iterations --out "$RESULTS"
  stage bench-steps-compile 170 "$PY" benchmarks/run.py --device cuda --suite steps \
    --dtypes float32 --modes compile compile+graph --critics mlp28 ctgan --no-iterations \
    --out "$RESULTS"
  stage bench-steps-bf16 100 "$PY" benchmarks/run.py --device cuda --suite steps \
    --dtypes bfloat16 --modes eager graph --no-iterations --out "$RESULTS"
  stage bench-ops 200 "$PY" benchmarks/run.py --device cuda --suite ops --out "$RESULTS"
  stage host-overhead 60 "$PY" benchmarks/host_overhead.py --device cuda
}

gpu_visible() {
  "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null
}

main() {
  note "gpu_check: $(date -u +%Y-%m-%dT%H:%M:%SZ), budget ${BUDGET}s"
  info
  build
  stage status 60 "$PY" -c "import wgangp_fast, pprint; pprint.pprint(wgangp_fast.backend_status())"
  # Stream code the CUDA extension carries itself instead of taking it from libstdc++ (a build
  # with its own copy of std::ostream::_M_insert<long> crashed formatting integers; see
  # csrc/common/geometry.h).
  echo "=== stream symbols defined in the extensions"
  for so in wgangp_fast/_C*.so; do
    echo "$so: $(nm -C --defined-only "$so" 2>/dev/null | grep -cE 'std::(basic_)?ostream|num_put')"
    nm -C --defined-only "$so" 2>/dev/null | grep -E '_M_insert|num_put' | head -5
    ldd "$so" 2>/dev/null | grep -E 'libstdc\+\+|libgcc' || true
  done
  # One process per backend, the error-path tests in their own: a crash (a native one in an error
  # path, say, as in test_kernel_ops_reject_mixed_devices_and_wrong_dtypes) then loses one stage,
  # not the others' results; failures reach $LOGS/failures.txt as they happen. cuda first: "auto"
  # takes it on CUDA tensors, and its tests take seconds where triton's compile for minutes.
  local errors="test_kernel_ops_reject_mixed_devices_and_wrong_dtypes"
  # The whole-step modes first: CUDA-graph capture can only be tested here.
  pytest_stage gpu-tests-steps 150 tests/steps/test_steps_gpu.py
  pytest_stage gpu-tests-cuda 120 tests/backends/test_gpu.py tests/backends/test_cuda_build.py \
    -k "not triton and not $errors"
  pytest_stage non-finite-cuda 40 WGANGP_FAST_TEST_DEVICE=cuda tests/ops/test_non_finite.py
  if ! pytest_stage gpu-tests-errors 40 tests/backends/test_gpu.py -k "$errors" &&
    command -v cuda-gdb >/dev/null; then
    # The same test again under cuda-gdb (installed on the lent machines): the native backtrace
    # of a crash, which pytest's faulthandler cannot give.
    stage error-paths-backtrace 90 cuda-gdb -q -batch -ex "set pagination off" -ex run \
      -ex "bt 40" --args "$PY" -m pytest -q -p no:cacheprovider tests/backends/test_gpu.py -k "$errors"
  fi
  benchmarks
  # Each kernel op of cuda and triton alone: error against the reference, device time and its
  # share of copy bandwidth with the host overhead hidden (the benchmark's figures include it).
  if gpu_visible; then
    stage cuda-diag 90 "$PY" scripts/cuda_diag.py
  fi
  # Then the rest of the suite (its gpu-marked tests run here, and "auto" on CUDA tensors), the
  # shared op matrix (tests/cases.py) on CUDA tensors (the GPU run of every dtype, shape and
  # parameter; tests/backends/test_gpu.py keeps only what it cannot check), and last triton's GPU
  # tests (JIT compiles: minutes). The first two with four pytest workers where pytest-xdist is
  # installed (it is on the lent machines): they are bound by host work and the machine has 16 cores.
  local par=()
  if "$PY" -c "import xdist" 2>/dev/null; then
    par=(-n 4)
  fi
  pytest_stage suite 150 tests -m "not triton_interp" ${par[@]+"${par[@]}"} \
    --ignore=tests/backends/test_gpu.py --ignore=tests/backends/test_cuda_build.py --ignore=tests/steps/test_steps_gpu.py
  local shared
  shared=$(grep -rlE "from \.+cases import" tests --include='test_*.py' |
    grep -v "tests/backends/test_gpu.py" | tr '\n' ' ')
  if [ -n "$shared" ] && gpu_visible; then
    # shellcheck disable=SC2086
    pytest_stage cuda-matrix 180 WGANGP_FAST_TEST_DEVICE=cuda $shared -m "not triton_interp" \
      ${par[@]+"${par[@]}"}
  fi
  # One process: its >2^31-element test needs 18 GiB and checks free memory first, which parallel
  # workers would race.
  pytest_stage gpu-tests-triton 240 tests/backends/test_gpu.py --durations=15 \
    -k "triton and not $errors"
  note "gpu_check: done in $(($(date +%s) - START))s"
  ! grep -qE "FAILED|TIMED OUT" "$SUMMARY"
}

collect() {
  [ -n "${OUT:-}" ] || return 0
  mkdir -p "$OUT"
  cp "$LOGS/gpu_check.log" "$LOGS/summary.txt" "$OUT/" 2>/dev/null
  cp "$LOGS/failures.txt" "$OUT/" 2>/dev/null
  local fresh
  fresh=$(cd "$ROOT" && find benchmarks/results -type f -newer "$LOGS/.start" | sort)
  for f in $fresh; do
    case $f in *.csv | *.md) cp "$ROOT/$f" "$OUT/" ;; esac
  done
  # shellcheck disable=SC2086
  tar -czf "$OUT/results.tar.gz" -C "$ROOT" build/gpu_check $fresh
  echo "results copied to $OUT: $(ls "$OUT" | tr '\n' ' ')"
}

main 2>&1 | tee "$LOGS/gpu_check.log"
status=${PIPESTATUS[0]}
collect
exit "$status"
