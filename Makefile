# wgangp_fast: `make demo` runs the main job, `make test` the tests. Each sets itself up:
# a virtual environment in .venv, torch 2.14.1, the package built in place.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.14.1
# torch guesses CUDA_HOME as /usr/local on this kind of machine; point it at the toolkit.
ifeq ($(origin CUDA_HOME), undefined)
ifneq ($(wildcard /usr/local/cuda/bin/nvcc),)
export CUDA_HOME := /usr/local/cuda
endif
endif
export PATH := $(abspath $(BIN)):$(PATH)
SOURCES := setup.py $(shell find csrc -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh' 2>/dev/null)

.PHONY: demo test test-torch211 build wheel docs bench gpu-check gpu-check-more gpu-tests-dry lint clean

$(BIN)/.deps: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip setuptools wheel
	$(BIN)/pip install "$(TORCH_SPEC)"
	$(BIN)/pip install ninja pytest pytest-benchmark scipy scikit-learn matplotlib tqdm psutil ctgan ruff tensorboard
	# the images and metrics extras (torchvision pinned to the build of torch 2.14.1)
	$(BIN)/pip install torchvision==0.29.1 "torchmetrics>=1.0" "torch-fidelity>=0.3"
	touch $@

$(BIN)/.built: $(BIN)/.deps $(SOURCES)
	$(BIN)/pip install --no-build-isolation --no-deps -e .
	touch $@

build: $(BIN)/.built

test: build
	$(BIN)/python -m pytest tests -m "not triton_interp" -q
	TRITON_INTERPRET=1 $(BIN)/python -m pytest tests -m triton_interp -q
	WGANGP_FAST_GPU_TESTS_DRY_RUN=1 $(BIN)/python -m pytest tests/steps/test_steps_gpu.py -q
	$(MAKE) gpu-tests-dry GPU_DRY_ARGS='-k "not large_layouts and not repeated_calls"'

# One wheel for every torch >= 2.10 and every CPython >= 3.9 (tag cp39-abi3: the libraries are
# built on the LibTorch stable ABI, without Python's C API), written to dist/ from a copy of the
# sources in build/wheel (in-place builds stay out of it). CPU library only, in about 10 s;
# WGANGP_FAST_WHEEL_CUDA=1 also builds the CUDA library (nvcc, for WHEEL_CUDA_ARCH: 9.0, the
# H200 of the lent GPU machine; 19 s here). Both kinds have the same file name: the last
# `make wheel` is the one in dist/.
# The build needs torch, setuptools, wheel and ninja, nothing else: it runs in .venv when
# `make build` has made it, else in a venv of its own, build/wheel-venv/<cpu|cuda>, holding
# WHEEL_TORCH_SPEC. The CPU library uses torch 2.10's stable ABI, which any torch >= 2.10
# provides, so a CPU build of torch serves (2.13.0+cpu lies on this machine's disk; elsewhere
# add PyTorch's CPU index with WHEEL_PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu");
# the CUDA library needs a CUDA build of torch (TORCH_SPEC, several GB).
WHEEL_CUDA_ARCH ?= 9.0
WHEEL_PIP_ARGS ?=
ifeq ($(WGANGP_FAST_WHEEL_CUDA),1)
WHEEL_ENV := WGANGP_FAST_FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$(WHEEL_CUDA_ARCH)"
WHEEL_KIND := cuda
WHEEL_TORCH_SPEC ?= $(TORCH_SPEC)
else
WHEEL_ENV := WGANGP_FAST_SKIP_CUDA_BUILD=1
WHEEL_KIND := cpu
WHEEL_TORCH_SPEC ?= torch==2.13.0+cpu
endif
ifneq ($(wildcard $(BIN)/.deps),)
WHEEL_BIN := $(BIN)
else
WHEEL_BIN := build/wheel-venv/$(WHEEL_KIND)/bin
endif
WHEEL_SOURCES := setup.py pyproject.toml LICENSE csrc wgangp_fast

build/wheel-venv/%/bin/.deps:
	rm -rf build/wheel-venv/$*
	$(PYTHON) -m venv build/wheel-venv/$*
	build/wheel-venv/$*/bin/pip install --upgrade pip "setuptools>=77" wheel ninja
	build/wheel-venv/$*/bin/pip install $(WHEEL_PIP_ARGS) "$(WHEEL_TORCH_SPEC)"
	touch $@

wheel: $(WHEEL_BIN)/.deps
	rm -rf build/wheel dist/wgangp_fast-*.whl
	mkdir -p build/wheel/src/docs dist
	cp -r $(WHEEL_SOURCES) build/wheel/src/
	cp docs/pypi.md build/wheel/src/docs/
	find build/wheel/src \( -name '*.so' -o -name __pycache__ \) -prune -exec rm -rf {} +
	env $(WHEEL_ENV) $(WHEEL_BIN)/pip wheel --no-build-isolation --no-deps -w dist build/wheel/src
	@ls dist/wgangp_fast-*.whl

# The step and op tests under torch 2.11 (what the lent GPU machines run) on the CPU, from
# nothing: a venv in build/torch211/venv and a copy of the tree (build/torch211/src) holding the
# libraries .venv's torch 2.14.1 built in place, unchanged: on the stable ABI they load under 2.11
# too, and nothing is built for it. CI runs it after `make test` (about 5 min, plus 4 min the
# first time for the venv). TORCH211_ARGS passes pytest options, e.g. TORCH211_ARGS="-k dropout".
TORCH211_ARGS ?=
test-torch211: build
	bash scripts/test_torch211.sh $(TORCH211_ARGS)

# The triton half of tests/backends/test_gpu.py on CPU tensors under the Triton interpreter: catches bugs
# in the GPU tests themselves before a GPU session. `make test` runs all but its large layouts
# (seconds); `make gpu-tests-dry GPU_DRY_ARGS=` runs all of it (6 min on this 2-core machine).
GPU_DRY_ARGS ?=
gpu-tests-dry: build
	WGANGP_FAST_GPU_TESTS_DRY_RUN=1 TRITON_INTERPRET=1 $(BIN)/python -m pytest tests/backends/test_gpu.py -q $(GPU_DRY_ARGS)

demo: build
	$(BIN)/python -m wgangp_fast train --dataset ring8 --out runs/demo --threads 1

# pytest-benchmark tables, then the full suite into benchmarks/results (CSV, markdown, chart).
# BENCH_ARGS passes options to benchmarks/run.py, e.g. BENCH_ARGS="--quick --device cpu".
BENCH_ARGS ?= --device auto
bench: build
	$(BIN)/python -m pytest benchmarks --benchmark-only -q --benchmark-group-by=group \
		--benchmark-columns=median,iqr,min,rounds --benchmark-sort=name
	$(BIN)/python benchmarks/run.py --suite all --out benchmarks/results $(BENCH_ARGS)

# On the lent GPU machine: its python3 already holds torch, triton, pytest and ninja (no venv, no
# network). `make gpu-check` (one command, ~330 s: GPU_CHECK_BUDGET_S) builds or takes a wheel
# from dist/, runs the GPU tests, the step benchmarks per mode and a ring8 training run in graph
# mode; `make gpu-check-more` the op benchmarks, host cost per call, the rest of the suite, the op
# matrix on CUDA and Triton's GPU tests. Everything goes to build/gpu_check/<part>, packed into
# $$OUT/gpu_check-<part>.tar.gz after each stage when OUT is set.
gpu-check:
	bash scripts/gpu_check.sh main

gpu-check-more:
	bash scripts/gpu_check.sh more

lint: $(BIN)/.deps
	$(BIN)/ruff check wgangp_fast tests benchmarks examples scripts docs/hooks.py

# The docs site (mkdocs.yml): mkdocs build --strict into build/site, with the `docs` extra of
# pyproject.toml installed into .venv the first time.
$(BIN)/.docs-deps: $(BIN)/.deps pyproject.toml
	$(BIN)/python scripts/extra_deps.py docs | xargs $(BIN)/pip install
	touch $@

docs: build $(BIN)/.docs-deps
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf build dist *.egg-info wgangp_fast/*.so $(BIN)/.built
