# The targets a newcomer and CI run. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
HOST ?= 127.0.0.1
PORT ?= 8000

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-20s %s\n", $$1, $$2}'

$(BIN)/realname: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/realname ## create .venv and install the service with its dev tools

run: install ## start the service on SQLite in sandbox mode (http://127.0.0.1:8000; PORT=8001 for another port)
	REALNAME_PUBLIC_URL=$${REALNAME_PUBLIC_URL:-http://$(HOST):$(PORT)} $(BIN)/realname serve --host $(HOST) --port $(PORT)

lint: install ## ruff, mypy and the import directions (lint-imports; contracts in pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy app realname_sdk
	$(BIN)/lint-imports --no-logo

test-prerequisites: ## check that Chromium, PostgreSQL and Redis are there for the test suite
	@$(PYTHON) tests/prerequisites.py

test: test-prerequisites lint ## lint, type-check and run the whole test suite (SQLite; set REALNAME_TEST_DATABASE_URL for PostgreSQL)
	$(BIN)/pytest $(PYTEST_ARGS)

test-postgres: ## the test suite against the local PostgreSQL
	REALNAME_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres $(MAKE) test

format: install ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis

constraints: ## refresh constraints.txt: the exact versions the Docker image installs
	rm -rf .constraints-venv
	$(PYTHON) -m venv .constraints-venv
	.constraints-venv/bin/python -m pip install --quiet --upgrade pip
	.constraints-venv/bin/python -m pip install --quiet .
	{ echo "# The exact versions the Docker image installs (pip install -c constraints.txt ."; \
	  echo "# in the Dockerfile). Refresh with: make constraints"; \
	  .constraints-venv/bin/python -m pip freeze --exclude-editable | grep -iv '^realname[ =@]'; \
	} > constraints.txt
	rm -rf .constraints-venv

.PHONY: help install run lint test test-prerequisites test-postgres format clean constraints

bench: install ## run the benchmarks (PostgreSQL) and print the table
	$(BIN)/python -m bench $(BENCH_ARGS)

.PHONY: bench
