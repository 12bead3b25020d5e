# `make demo`: set up .venv and cluster the built-in simulated data.  `make test`: set up and run the tests.
# `make docs`: set up with the docs extra and build the documentation with warnings as errors.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-slow benchmark docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

setup: $(BIN)/python
	# torch 2.13.0 CPU build first: an unpinned torch would pull a multi-GB CUDA build
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[test]"

demo: setup
	$(BIN)/python -m scdmac demo

test: setup
	$(BIN)/python -m pytest -q tests

test-slow: setup
	$(BIN)/python -m pytest -q -m slow tests

benchmark: setup
	$(BIN)/python benchmarks/accuracy.py

docs: $(BIN)/python
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[docs]"
	$(BIN)/sphinx-build -W -b html docs docs/_build/html
