# The two README commands: `make dev` runs the platform, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install dev test test-readme lint check-defs

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

dev: $(STAMP)
	$(BIN)/astra dev

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not readme"

# The README's "Using it" commands against a running dev platform (about 3 minutes).
test-readme: $(STAMP)
	$(BIN)/python -m pytest -q -m readme

# `dg check defs` on a throwaway SQLite instance (dagster.yaml at the root is the Postgres
# one of the compose stack, which dg would read without DAGSTER_HOME).
check-defs: $(STAMP)
	@home=$$(mktemp -d) && cp dagster.embedded.yaml $$home/dagster.yaml \
		&& DAGSTER_HOME=$$home $(BIN)/dg check defs; rc=$$?; rm -rf $$home; exit $$rc

lint: $(STAMP) check-defs
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy astra_pipeline resources sensors
