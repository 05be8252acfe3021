#!/usr/bin/env bash
# The step and op tests under torch 2.11 on the CPU (`make test-torch211`; CI runs it after
# `make test`): the lent GPU machines run torch 2.11, so what breaks there shows here first.
#
# Sets itself up from nothing, all under build/torch211 (TORCH211_DIR):
#   venv/  Python venv with torch 2.11.0 and the test dependencies (once; ~4 min, 4.7 GB)
#   src/   a copy of the working tree (tracked and untracked files that git does not ignore)
#          with the compiled libraries of the in-place build: built once by .venv's torch 2.14.1
#          on the LibTorch stable ABI, they load under torch 2.11 unchanged.
# Then pytest runs TORCH211_TESTS in src/; arguments go to pytest (e.g. -k dropout -x). Last, the
# sources are built against torch 2.11's own headers (src-built/) and the op tests run on that.

set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
DIR=${TORCH211_DIR:-$ROOT/build/torch211}
PY=${PYTHON:-python3}
SPEC=${TORCH211_SPEC:-torch==2.11.0}
DEPS="numpy ninja pytest scipy"
TESTS=${TORCH211_TESTS:-tests/steps/test_steps.py tests/steps/test_dropout_masks.py \
tests/steps/test_steps_gpu.py tests/ops/test_functorch.py tests/ops/test_ops.py}
VENV=$DIR/venv
SRC=$DIR/src

say() { echo "test_torch211: $*"; }

mkdir -p "$DIR"
if [ "$(cat "$VENV/.deps" 2>/dev/null)" != "$SPEC $DEPS" ]; then
  say "creating $VENV with $SPEC ($DEPS)"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip setuptools wheel
  "$VENV/bin/pip" install -q "$SPEC"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install -q $DEPS
  echo "$SPEC $DEPS" >"$VENV/.deps"
fi
"$VENV/bin/python" -c "import torch; print('test_torch211: torch', torch.__version__)"

# The working tree's files as they are now (a file deleted but not yet committed is skipped).
rm -rf "$SRC.new"
mkdir -p "$SRC.new"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -z --cached --others --exclude-standard |
    tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$SRC.new"
else
  tar --exclude=./build --exclude=./.venv --exclude=./dist --exclude='*.so' -cf - . |
    tar -xf - -C "$SRC.new"
fi

# No build for torch 2.11: the libraries on the LibTorch stable ABI that .venv's torch built in
# place (`make build`, the same files a wheel ships) must load under torch 2.11 as they are.
shopt -s nullglob
libs=("$ROOT"/wgangp_fast/_C*.so)
shopt -u nullglob
if [ ${#libs[@]} -eq 0 ]; then
  say "no compiled library in $ROOT/wgangp_fast: run make build first"
  exit 1
fi
cp "${libs[@]}" "$SRC.new/wgangp_fast/"
(cd "$SRC.new" && "$VENV/bin/python" -c "
import wgangp_fast.backends as b
assert 'cpu' in b.available_backends(), b.available_backends()
print('test_torch211: the stable-ABI cpu library loads under this torch')")
rm -rf "$SRC"
mv "$SRC.new" "$SRC"

cd "$SRC"
# WGANGP_FAST_GPU_TESTS_DRY_RUN: test_steps_gpu.py on the CPU, the graph modes simulated.
rc=0
# shellcheck disable=SC2086
env WGANGP_FAST_GPU_TESTS_DRY_RUN=1 "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
  $TESTS "$@" || rc=$?

# Then the sources built against torch 2.11's own headers, as `make gpu-check` builds them on the
# lent GPU machine when no wheel is carried (torch 2.11, sm_90 only): the CPU library, and the
# CUDA library where there is a CUDA toolkit, in a second copy (src-built/, no library copied in);
# the op matrix, the backend tests and the CUDA build tests run on what that built. About a minute.
# TORCH211_BUILD=0 skips it.
if [ "${TORCH211_BUILD:-1}" = 1 ]; then
  BUILT=$DIR/src-built
  rm -rf "$BUILT"
  cp -r "$SRC" "$BUILT"
  rm -rf "$BUILT"/wgangp_fast/_C*.so "$BUILT/build"
  cd "$BUILT"
  # where setup.py finds a toolkit (it looks in the same places), the CUDA library must build
  flag=WGANGP_FAST_SKIP_CUDA_BUILD=1
  if command -v nvcc >/dev/null || [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ]; then
    flag=WGANGP_FAST_FORCE_CUDA=1
  fi
  say "building the libraries against torch 2.11's headers ($flag, TORCH_CUDA_ARCH_LIST=9.0)"
  if env "$flag" TORCH_CUDA_ARCH_LIST=9.0 "$VENV/bin/python" setup.py -q build_ext --inplace \
    >build.log 2>&1; then
    ls wgangp_fast/_C*.so
    TORCH_CUDA_ARCH_LIST=9.0 "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
      tests/ops/test_ops.py tests/backends/test_backends.py tests/backends/test_cuda_build.py ||
      rc=1
  else
    tail -40 build.log
    say "the build against torch 2.11's headers FAILED (whole log: $BUILT/build.log)"
    rc=1
  fi
fi
exit "$rc"
