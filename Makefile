# Everything a fresh machine needs, from Python 3.11 alone.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# The project's own instance: never a DAGSTER_HOME from the environment, whose dagster.yaml
# `make demo` would otherwise overwrite.
DEMO_HOME := $(CURDIR)/.dagster_home
DEMO_DIR ?= data/demo
DEMO_RECORDS ?= 300000

.PHONY: install test lint demo ui bench clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

$(DEMO_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DEMO_HOME)
	cp dagster.yaml $@

lint: install
	$(BIN)/ruff check .

test: install
	$(BIN)/ruff check .
	$(BIN)/pytest

demo: install $(DEMO_HOME)/dagster.yaml
	$(BIN)/batch-pipeline sample $(DEMO_DIR)/input --records $(DEMO_RECORDS)
	DAGSTER_HOME=$(DEMO_HOME) $(BIN)/batch-pipeline run $(DEMO_DIR)/input/leads.csv \
		--processor validate --processor-options @$(DEMO_DIR)/input/leads_schema.json \
		--chunk-records 25000 --output $(DEMO_DIR)/output
	@echo "Runs are in the Dagster instance at $(DEMO_HOME): 'make ui' shows them."

ui: install $(DEMO_HOME)/dagster.yaml
	DAGSTER_HOME=$(DEMO_HOME) $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1

bench: install
	$(BIN)/python benchmarks/executor_overhead.py

clean:
	rm -rf $(VENV) $(DEMO_HOME) data output .pytest_cache .ruff_cache *.egg-info
