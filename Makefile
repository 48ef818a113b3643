# The two commands of the README: `make run` (service + simulator, zero setup) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CLIENT := clients/typescript

.PHONY: install run test lint services browser client client-deps

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

client-deps: $(CLIENT)/node_modules/.package-lock.json ## the TypeScript client's packages

$(CLIENT)/node_modules/.package-lock.json: $(CLIENT)/package-lock.json
	scripts/node.sh
	cd $(CLIENT) && npm ci --no-audit --no-fund

client: install client-deps ## regenerate clients/typescript from the service's OpenAPI document
	$(PY) -m app.main > $(CLIENT)/openapi.json
	cd $(CLIENT) && npm run generate

lint: install ## ruff, the types (mypy) and the import contracts
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

test: install services browser client-deps lint ## lint, types, the import contracts, then the whole suite against real Postgres and Redis
	$(PY) -m pytest -n 2 --dist loadscope -m "not serial"  # two workers, each with its own database
	$(PY) -m pytest -m serial  # what stops the server every worker uses, alone
