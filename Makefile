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
.PHONY: sdk-js sdk-js-test browser-deps

$(STAMP): pyproject.toml sdk/python/pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]" -e "./sdk/python[kafka]" SecantusDB
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
test: install sdk-js-test
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -q -p no:cacheprovider --durations=25

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

# The browser SDK: its build needs esbuild (an npm dev dependency, installed into sdk/js/node_modules);
# the built dist is committed, and what the tests load.
SDK_JS := sdk/js

sdk-js:
	cd $(SDK_JS) && npm ci --no-audit --no-fund --loglevel=error && node scripts/build.mjs

sdk-js-test:
	node --test $(SDK_JS)/test/
	cd $(SDK_JS) && npm ci --no-audit --no-fund --loglevel=error && node scripts/build.mjs --check

# Chromium and its WebDriver for the browser tests (tests/browser installs them too when missing).
browser-deps:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }

clean:
	rm -rf .local/run .local/worker-* *.egg-info .pytest_cache .mypy_cache .ruff_cache
