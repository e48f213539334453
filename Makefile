# Two commands matter: `make demo` (set up, generate data, run the main example) and
# `make test` (set up, lint, type-check, test). Both need only Python 3.11+, pip and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_SIZE ?= 300MB

.PHONY: demo test lint bench clean

demo: $(VENV)/.installed examples/flights/data/flights.csv
	$(BIN)/headrace run examples/flights/pipeline.yaml

examples/flights/data/flights.csv: | $(VENV)/.installed
	$(BIN)/python -m headrace.sampledata $@ --size $(DEMO_SIZE)

# Tests on up to 4 workers (pytest-xdist; one per core, so 2 in CI); `.venv/bin/pytest ...`
# alone runs serially. worksteal: idle workers take queued tests from busy ones, which keeps
# both busy to the end, as a few tests take 30 s or more.
PYTEST_WORKERS ?= auto
test: $(VENV)/.installed lint
	$(BIN)/pytest -n $(PYTEST_WORKERS) --maxprocesses 4 --dist worksteal

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/run.py

# The lock pins every dependency, so CI and laptops install the same versions.
$(VENV)/.installed: pyproject.toml requirements.lock examples/plugin-example/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[dev,bench,uvloop]'
	$(BIN)/python -m pip install -q --no-deps -e examples/plugin-example
	touch $@

clean:
	rm -rf $(VENV) examples/*/out examples/flights/data .pytest_cache .mypy_cache .ruff_cache
