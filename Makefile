# The two commands of the README: `make run` (service + simulator, zero setup) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install run test lint services browser

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

run: install ## the dev run: SQLite file, in-memory limits, the Seedance simulator alongside
	$(PY) -m app.dev

services: ## make sure Postgres and Redis answer on 127.0.0.1 (docker compose, else apt-get)
	scripts/services.sh

browser: ## Debian's Chromium, for the playground's browser test
	scripts/browser.sh

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: install services browser lint ## the whole suite against real Postgres and Redis
	$(PY) -m pytest
