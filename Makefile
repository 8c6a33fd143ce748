# Telecare: the same verbs run locally and in CI.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast check bench bench-postgres migrate install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

.env: | $(STAMP)
	$(BIN)/telecare init-env

migrate: $(STAMP) .env
	$(BIN)/telecare migrate

run: $(STAMP) .env
	$(BIN)/telecare migrate
	$(BIN)/telecare demo --if-empty
	@echo "Serving on http://127.0.0.1:8000  (Ctrl-C to stop)"
	$(BIN)/telecare serve

# Two workers (pytest-xdist; each starts its own PostgreSQL and browser), whole files per worker so
# module-scoped servers start once.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

# A newcomer's loop: SQLite only, browser and slow tests deselected, two workers (a few minutes).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -k "not postgresql" -m "not browser and not slow" $(PYTEST_ARGS)

check: $(STAMP)
	$(BIN)/ruff check src tests bench migrations
	$(BIN)/ruff format --check src tests bench migrations
	$(BIN)/mypy
	cd src && ../$(BIN)/lint-imports --config ../pyproject.toml
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_architecture.py tests/test_docs.py

# Every benchmark at small sizes on SQLite (a few minutes; `reads.py` needs Debian's `wrk`). Each prints its
# figure beside a ceiling measured in the same run and the ratio. `make bench-postgres`: the same on a
# throwaway PostgreSQL (pgserver), two uvicorn workers where the benchmark serves HTTP.
bench: $(STAMP)
	$(BIN)/python bench/booking.py
	$(BIN)/python bench/ingest.py --only sqlite --batches 10 --singles 1000 --patients 50
	$(BIN)/python bench/signaling.py --levels 25,50,100 --hold 3 --stagger 3 --max-seconds 90
	$(BIN)/python bench/reads.py
	$(BIN)/python bench/sqlite_sync.py
	$(BIN)/python bench/messaging.py

bench-postgres: $(STAMP)
	$(BIN)/python bench/booking.py --postgres
	$(BIN)/python bench/ingest.py --only postgresql --batches 10 --singles 1000 --patients 50
	$(BIN)/python bench/signaling.py --pgserver --workers 2 --levels 25,50,100 --hold 3 --stagger 3 \
		--max-seconds 90
	$(BIN)/python bench/reads.py --postgres
	$(BIN)/python bench/messaging.py --postgres

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
