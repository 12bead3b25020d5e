# `make demo`: set up .venv and cluster the built-in simulated data.  `make test`: set up and run the tests.
# `make check`: lint, format check and type check.  `make docs`: build the documentation, warnings as errors.
# `make ci`: everything CI runs (.ci/run).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup setup-dev demo test test-slow check docs ci benchmark

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

setup: $(BIN)/python
	# torch 2.13.0 CPU build first: an unpinned torch would pull a multi-GB CUDA build
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[test]"

setup-dev: setup
	$(BIN)/pip install --quiet -e ".[dev,docs]"

demo: setup
	$(BIN)/python -m scdmac demo

test: setup
	$(BIN)/python -m pytest -q tests

test-slow: setup
	$(BIN)/python -m pytest -q -m slow tests

check: setup-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

docs: setup-dev
	$(BIN)/sphinx-build -W -q -b html docs docs/_build/html

ci: check docs test

benchmark: setup
	$(BIN)/python benchmarks/accuracy.py
