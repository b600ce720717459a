# leadscore — every entry point an operator or CI needs.
# The two commands of the README: `make demo` (the main job) and `make test` (the whole suite).

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WORKERS ?= 1
BROKERS ?= 1

.PHONY: install stack-up stack-down stack-status test unit lint typecheck demo run bench bench-quick clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]" SecantusDB
	touch $(STAMP)

install: $(STAMP)

stack-up: install
	BROKERS=$(BROKERS) $(PY) -m devstack up

stack-down: install
	$(PY) -m devstack down

stack-status: install
	$(PY) -m devstack status

# The whole suite: unit tests, then integration tests against the real stack, which the test
# session brings up through devstack and stops again at the end.
test: install
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -q -p no:cacheprovider

unit: install
	$(PY) -m pytest -q tests/unit

lint: install
	$(PY) -m ruff check .

typecheck: install
	$(PY) -m mypy

demo: install
	$(PY) -m app.demo

run: install
	WORKERS=$(WORKERS) $(PY) -m app.cli run --workers $(WORKERS)

bench: install
	$(PY) -m bench

bench-quick: install
	$(PY) -m bench --quick

clean:
	rm -rf .local/run .local/worker-* *.egg-info .pytest_cache .mypy_cache .ruff_cache
