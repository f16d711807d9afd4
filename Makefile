# Two commands on a fresh machine: `make demo` (set up + run the embedded default) and
# `make test` (set up + run the tests). Everything installs from the project's own files.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml scripts/setup-system.sh 2>/dev/null | cksum | cut -d' ' -f1)
export EDGECOMPRESS_CACHE ?= $(CURDIR)/.cache/edgecompress
# NNCF's torch backend compiles a C++ extension on first use, over its default 60 s timeout here.
export NNCF_EXTENSION_LOAD_TIMEOUT ?= 0
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: setup demo test lint bench clean arm64-check arm64-rootfs

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch==2.13.0 is pinned in pyproject (the CPU wheel on local disk).
	$(BIN)/pip install --quiet -e '.[dev]'
	@if [ -x scripts/setup-system.sh ]; then scripts/setup-system.sh; fi
	rm -f $(VENV)/.installed-*
	touch $@

setup: $(STAMP)

demo: setup
	$(BIN)/edgecompress demo --out edgecompress-demo

# Two pytest workers (pytest-xdist), one test file per worker at a time so module fixtures are
# built once: 13 min of tests here (1089 tests, 2026-12-02), well inside CI's 30.
test: setup
	$(BIN)/ruff check .
	# mypy ([tool.mypy]); the script maps exporters/ and targets/ into edgecompress as the install does
	$(BIN)/python .ci/typecheck.py
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile tests

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python benchmarks/bench_spine.py

# issue #5 arm64 check: an arm64 Debian rootfs (cached in .cache/arm64-rootfs, stamp-guarded) and
# EfficientNet-Lite0 int8 ONNX / TFLite run there under qemu-user vs on x86; appends to
# benchmarks/RESULTS-targets.md. Needs root (debootstrap, chroot). Latency there is emulated.
arm64-rootfs: setup
	scripts/setup-system.sh arm64
	nice -n 10 scripts/arm64-rootfs.sh

arm64-check: arm64-rootfs
	nice -n 10 $(BIN)/python benchmarks/arm64_check.py

clean:
	rm -rf edgecompress-out edgecompress-demo .cache
