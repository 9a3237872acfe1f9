# The two commands a newcomer needs: `make run` and `make test`.

-include .env
export

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app wsgi
PORT ?= 3000

.PHONY: install run dev migrate rollback seed purge test chaos lint format clean bench

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $@

run: migrate seed
	$(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

dev: migrate seed
	$(FLASK) run --debug --port $(PORT)

migrate: install
	$(FLASK) migrate

rollback: install
	$(FLASK) rollback

seed: install
	$(FLASK) seed

purge: install
	$(FLASK) purge-idempotency-keys

test: install
	$(BIN)/pytest

# The soak under faults (a few minutes; SOAK_SECONDS tunes it), left out of `make test`.
chaos: install
	$(BIN)/pytest -m chaos

# Load test on a fresh database (not part of `make test`); see BENCHMARKS.md.
bench: install
	$(BIN)/python bench/run.py $(BENCH_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	-$(BIN)/python -c "from booking import embedded; embedded.stop('.data')" 2>/dev/null
	rm -rf $(VENV) .data .pytest_cache .ruff_cache *.egg-info
