# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo serve test lint format typecheck pytest check bench clean test-packages

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
test-packages:
	scripts/ensure-test-packages

# pytest exits 5 when it collects nothing: that is a failure here, never a silent pass.
# RELAY_REQUIRE_POSTGRES=1: a PostgreSQL test that cannot start its server fails, never skips.
# The relay's main flows run a second time on PostgreSQL (the store contract suite and the
# multi-process tests already run on it in the first pass).
PG_FLOWS := tests/integration/test_callbacks.py \
	tests/integration/test_pixazo_flow.py tests/integration/test_scenario_flow.py \
	tests/integration/test_delivery.py tests/integration/test_pacing.py \
	tests/integration/test_handoff.py tests/integration/test_poll_schedule.py

# Test files run on every core (pytest-xdist; a file's tests stay together on one worker).
XDIST := -n auto --dist loadfile

pytest: $(STAMP) test-packages
	RELAY_REQUIRE_POSTGRES=1 $(BIN)/pytest $(XDIST)
	RELAY_REQUIRE_POSTGRES=1 RELAY_TEST_ENGINE=postgresql $(BIN)/pytest -q $(XDIST) $(PG_FLOWS)

test: lint typecheck pytest

check: test

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
