# edgestream: `make demo` and `make test` set up everything they need on a fresh Debian machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CACHE ?= $(HOME)/.cache/edgestream
PYTEST_ARGS ?=

.PHONY: all demo test bench lint typecheck system venv unit kafka dashboards render clean help

help:
	@echo "make demo   - install what is needed and run the demo gateway (simulated sensors, no hardware)"
	@echo "make test   - install what is needed and run lint, type checks and the whole test suite"
	@echo "make bench  - run tests/bench and rewrite BENCHMARKS.md"
	@echo "make lint   - ruff and mypy only"

system:
	@bash .ci/install-system-deps.sh

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "edgestream needs Python 3.11 or newer")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e ".[tier,kafka,modbus,dev]"
	@touch $(STAMP)

venv: $(STAMP)

lint: venv
	$(VENV)/bin/ruff check edge store gateway tests examples dashboards
	@bash .ci/typecheck.sh $(VENV)

typecheck: lint

# Apache Kafka jars from Maven Central, cached in ~/.cache/edgestream (the tests start real KRaft brokers).
kafka: system
	@bash tests/kafka/fetch-kafka.sh >/dev/null

# Grafana's published dashboard types (@grafana/schema) and tsc, for the dashboard type checks.
DASH_STAMP := dashboards/node_modules/.installed
$(DASH_STAMP): dashboards/package.json dashboards/package-lock.json
	npm ci --prefix dashboards --no-audit --no-fund
	@touch $(DASH_STAMP)

dashboards: $(DASH_STAMP)

# Re-draw docs/img/ from the dashboards' own queries against a real Prometheus (after changing dashboards).
render: system venv kafka
	$(PY) dashboards/render_panels.py

test: system venv lint kafka dashboards
	$(VENV)/bin/pytest $(PYTEST_ARGS) tests --ignore=tests/bench

unit: venv
	$(VENV)/bin/pytest $(PYTEST_ARGS) tests/unit

BENCH_RUNS ?= 3
bench: system venv kafka
	$(PY) tests/bench/run.py --runs $(BENCH_RUNS) --write BENCHMARKS.md

demo: system venv kafka
	$(PY) examples/demo.py

clean:
	rm -rf $(VENV) .build .pytest_cache .mypy_cache .ruff_cache
