# `make demo` and `make test` set up everything on a fresh machine: they create
# .venv when missing and (re)install the project when pyproject.toml changed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: demo test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,sim]'
	touch $(STAMP)

demo: $(STAMP)
	timeout 600 $(BIN)/python -m pipelines.demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	timeout 900 $(BIN)/python -m pytest -q

bench: $(STAMP)
	for m in bench/[a-z]*.py; do timeout 300 $(BIN)/python -m bench.$$(basename $$m .py) || exit 1; done

clean:
	rm -rf $(VENV)
