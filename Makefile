# Two commands set everything up on a fresh machine:
#   make demo   — the main job: a local swarm (queen + 3 workers) runs encrypted inference
#   make test   — the test suite (lint, layer contract, unit, integration)
PYTHON ?= $(shell command -v python3.10 || echo python3.10)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint bench-ops clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 10), "hswarm needs Python 3.10 (OpenFHE wheels): set PYTHON=/path/to/python3.10"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hswarm demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: $(STAMP) lint
	$(BIN)/pytest -q

test-fast: $(STAMP)
	$(BIN)/pytest -q -m 'not slow'

bench-ops: $(STAMP)
	$(BIN)/python benchmarks/ops.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
