# Everything a fresh machine needs, from Python 3.11 alone.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# The project's own instance: never a DAGSTER_HOME from the environment, whose dagster.yaml
# `make demo` would otherwise overwrite.
DEMO_HOME := $(CURDIR)/.dagster_home
DEMO_DIR ?= data/demo
DEMO_RECORDS ?= 300000

.PHONY: install test test-fast lint browser demo ui bench bench-quick bench-small-files bench-executor \
	bench-keyed bench-leads clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# The instance's storage is created here, before `dagster dev` starts a webserver and a daemon
# that would otherwise both create the same SQLite tables at once.
$(DEMO_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DEMO_HOME)
	cp dagster.yaml $@
	DAGSTER_HOME=$(DEMO_HOME) $(BIN)/dagster instance migrate >/dev/null

# Lint, format and types (mypy, configured in pyproject.toml); `make test` runs it first.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Headless Chromium and its driver for the UI tests (batch_pipeline_tests/test_ui.py), from
# Debian's packages; only when missing, and only as root with apt-get. Otherwise the UI tests
# are skipped.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then \
		echo "chromium and chromedriver are installed"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		{ apt-get update && \
		  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
			chromium chromium-driver; } || \
		echo "installing chromium/chromedriver failed: the UI tests will be skipped"; \
	else \
		echo "chromium/chromedriver missing and cannot be installed (needs root and apt-get):" \
			"the UI tests will be skipped"; \
	fi

# Everything: lint, then every test (what CI runs).
test: lint browser
	$(BIN)/pytest

# The inner loop (under a minute on 2 cores): the tests not marked slow, browser or services
# (markers in pyproject.toml; README, "Tests"). Needs no server; stops at the first failure.
test-fast: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q -x -m "not slow and not browser and not services"

demo: install $(DEMO_HOME)/dagster.yaml
	$(BIN)/batch-pipeline sample $(DEMO_DIR)/input --records $(DEMO_RECORDS)
	DAGSTER_HOME=$(DEMO_HOME) $(BIN)/batch-pipeline run $(DEMO_DIR)/input/leads.csv \
		--processor validate --processor-options @$(DEMO_DIR)/input/leads_schema.json \
		--chunk-records 25000 --output $(DEMO_DIR)/output
	@echo "Runs are in the Dagster instance at $(DEMO_HOME): 'make ui' shows them."

ui: install $(DEMO_HOME)/dagster.yaml
	mkdir -p data/inbox
	DAGSTER_HOME=$(DEMO_HOME) $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1

# Issue 16's goals in one run: throughput at 10M and 60M records (1.1 GB and 6.7 GB of CSV,
# generated once into data/bench/) of batch_job in process and of `batch-pipeline run` cold,
# against the raw Arrow reads, a naive loop, pandas (10M only) and the DuckDB and polars scripts
# (each stopped at 16 GiB resident, or after 900 s, and reported so). 10-11 minutes on this
# project's 2-core machine on 2026-12-04 (10M ~3 min, 60M ~7 min), plus about 70 s the first
# time to generate the inputs.
bench: install
	$(BIN)/python -m benchmarks.throughput --sizes 10m,60m --kinds all

# The same kinds at 10k, 1M and 10M (about 6 minutes).
bench-quick: install
	$(BIN)/python -m benchmarks.throughput --sizes 10k,1m,10m --kinds all

# 2,000 small files: a batch_job run per file against one file-set run over the folder.
bench-small-files: install
	$(BIN)/python -m benchmarks.small_files

# Seed 002's figures for the keyed stage: kalman per user with its state in SQLite, Postgres
# and DynamoDB (a moto server), then the whole keyed job on 10M measurements (about 3 minutes).
bench-keyed: install
	$(BIN)/python -m benchmarks.keyed_state

# Leads per second: the leads processor on 1M leads with 20% duplicates, through the CLI's job
# (multiprocess and in-process), run_batch with a SQLite and a Postgres lead store, and a pandas
# script, each batch then the same file again (about 10 minutes).
bench-leads: install
	$(BIN)/python -m benchmarks.leads

# The cost of one mapped step under each executor (10-15 minutes).
bench-executor: install
	$(BIN)/python -m benchmarks.executor_overhead

clean:
	rm -rf $(VENV) $(DEMO_HOME) data output .pytest_cache .ruff_cache .mypy_cache *.egg-info
