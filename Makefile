# The README's two commands are `make run` and `make test`; the rest serve CI and development.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test lint format typecheck contracts schema schema-check ci bench bench-ledger lock

# Create the venv if missing and install exactly what the lock file pins (hash-checked).
$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

install: $(STAMP)

run: install
	exec $(VENV)/bin/gpucloud dev

test: install
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

typecheck: install
	$(VENV)/bin/mypy domain infra schema resolvers jobs gpucloud

contracts: install
	$(VENV)/bin/lint-imports

schema: install
	$(VENV)/bin/gpucloud export-schema

schema-check: install
	$(VENV)/bin/gpucloud export-schema --check

ci: test lint typecheck contracts schema-check

bench: install
	$(PY) -m bench.graphql_read
	$(PY) -m bench.auth_overhead
	$(PY) -m bench.ledger

# The ledger alone: transfers/s vs plain INSERT commits, and one metering tick on 10,000 holds.
bench-ledger: install
	$(PY) -m bench.ledger

# Re-pin after changing dependencies in pyproject.toml (needs `uv` on PATH).
lock:
	uv pip compile pyproject.toml --extra dev --python-version 3.11 --generate-hashes -o requirements.lock
