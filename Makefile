# The two commands a newcomer needs: `make run` and `make test`. `make help` lists the rest.

# .env holds KEY=value lines (see .env.example for its rules); every one is exported.
-include .env
export

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app wsgi
PORT ?= 3000
# python-dotenv is not installed: the Makefile reads .env, Flask need not tip about it.
export FLASK_SKIP_DOTENV := 1

# The interpreter the venv is built with; when it changes (another python3, an upgrade),
# the venv is built again.
INTERPRETER := $(shell $(PYTHON) -c 'import sys; print(sys.version.split()[0], sys.executable)' 2>/dev/null)

.DEFAULT_GOAL := help
.PHONY: help install run dev migrate rollback seed purge test chaos sandbox model lint format stop clean bench

help: ## List the targets
	@echo "Targets (settings come from the environment or .env; see .env.example):"
	@awk 'BEGIN {FS = ":.*## "} /^[a-z]+:.*## / {printf "  make %-9s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: $(VENV)/.installed ## Make .venv with the service and its tools (Python 3.11+)

$(VENV)/.installed: setup.cfg pyproject.toml $(VENV)/.interpreter
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed, $(PYTHON) is " + sys.version.split()[0] + "; run make PYTHON=python3.12 (or another 3.11+)")'
	@echo "making $(VENV) with Python $(INTERPRETER) (output in $(VENV)/install.log)"
	@$(PYTHON) -m venv --clear $(VENV)
	@echo '$(INTERPRETER)' > $(VENV)/.interpreter
	@($(BIN)/pip install --quiet --upgrade pip && $(BIN)/pip install --quiet -e '.[test,dev]') \
		> $(VENV)/install.log 2>&1 || (cat $(VENV)/install.log; exit 1)
	@touch $@

# Rewritten only when the interpreter differs from the one recorded, so only then does it
# make the venv out of date.
$(VENV)/.interpreter: FORCE
	@test -n '$(INTERPRETER)' || { echo "$(PYTHON) does not run; install Python 3.11+ or run make PYTHON=python3.12"; exit 1; }
	@mkdir -p $(VENV)
	@echo '$(INTERPRETER)' | cmp -s - $@ || echo '$(INTERPRETER)' > $@

FORCE:

# The port is checked first: a busy one must not cost a migration and a seed before it fails.
run: install ## Serve the API on 127.0.0.1:$PORT: gunicorn and the worker (Procfile); Ctrl-C stops both
	@$(FLASK) check-listen
	@$(FLASK) migrate
	@$(FLASK) seed
	@$(BIN)/honcho start --port $(PORT) -f Procfile

dev: install ## Serve with Flask's reloading debug server on 127.0.0.1:$PORT
	@$(FLASK) check-listen
	@$(FLASK) migrate
	@$(FLASK) seed
	@$(FLASK) run --debug --port $(PORT)

migrate: install ## Apply the migrations not applied yet
	@$(FLASK) migrate

rollback: install ## Undo the latest migration (refuses to drop cancelled bookings)
	@$(FLASK) rollback

seed: install ## Add the three sample events if they are missing
	@$(FLASK) seed

purge: install ## Delete idempotency keys older than IDEMPOTENCY_TTL_SECONDS
	@$(FLASK) purge-idempotency-keys

test: install ## Run the tests (real PostgreSQL, gunicorn, nginx, Redis where needed)
	$(BIN)/pytest

chaos: install ## The soak under faults and the database failover, a few minutes
	$(BIN)/pytest -m chaos

sandbox: install ## docs/deploy.md run as written in a fresh Debian 12 container (root), a few min
	$(BIN)/pytest -m sandbox

model: install ## The sale against its model, longer: SALE_MODEL_EXAMPLES (default 200) runs
	SALE_MODEL_EXAMPLES=$${SALE_MODEL_EXAMPLES:-200} $(BIN)/pytest tests/test_sale_model.py

bench: install ## The service against its floor, nginx, pgbench, webhooks, an open-loop on-sale; minutes (BENCH_ARGS=--quick: ~3)
	$(BIN)/python bench/run.py $(BENCH_ARGS)
	$(BIN)/python bench/webhooks.py $(BENCH_ARGS)
	$(BIN)/python bench/onsale.py $(BENCH_ARGS)

lint: install ## Check style and formatting with ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install ## Fix style and formatting with ruff
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

stop: ## Stop the embedded PostgreSQL; its data in .data/ stays
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m booking.db.embedded stop; fi

clean: stop ## Stop the embedded PostgreSQL and delete .venv, .data and every cache
	rm -rf $(VENV) .data .pytest_cache .ruff_cache .hypothesis *.egg-info
