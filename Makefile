# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo serve test lint format typecheck pytest check bench clean postgres

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/upscale-relay demo

serve: $(STAMP)
	$(BIN)/upscale-relay serve

lint: $(STAMP)
	$(BIN)/ruff check service tests bench
	$(BIN)/ruff format --check service tests bench

format: $(STAMP)
	$(BIN)/ruff format service tests bench
	$(BIN)/ruff check --fix service tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# The PostgreSQL server binaries the suite starts a throwaway server from (installed as root
# with apt-get when missing; a no-op when present).
postgres:
	scripts/ensure-postgres

# pytest exits 5 when it collects nothing: that is a failure here, never a silent pass.
# RELAY_REQUIRE_POSTGRES=1: a PostgreSQL test that cannot start its server fails, never skips.
pytest: $(STAMP) postgres
	RELAY_REQUIRE_POSTGRES=1 $(BIN)/pytest

test: lint typecheck pytest

check: test

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
