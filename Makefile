# The two commands of the README:
#   make run    start the local stack, migrate, create topics, then scripts/run-local: the
#               sandbox gateway, the User Service stand-in and the worker (Ctrl-C stops them)
#   make test   start the local stack, then lint, type-check and run the whole test suite
# Everything they need is installed here: a virtualenv in .venv, Kafka and PostgreSQL by
# scripts/stack.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-containers install stack-up stack-down lint unit integration bench bench-memory chaos chaos-small scale-proof clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "payment-worker needs Python 3.11 or newer; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

stack-up:
	scripts/stack up

stack-down:
	scripts/stack down

run: install stack-up
	$(BIN)/payment-worker db upgrade
	$(BIN)/payment-worker topics create
	scripts/run-local

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	scripts/lint-dockerfile

unit: install
	$(BIN)/pytest tests/unit

integration: install stack-up
	$(BIN)/pytest tests/integration

test: install stack-up lint
	$(BIN)/pytest

# The image built and run, the compose system up and down, and the end-to-end,
# crash-recovery and projection tests on test containers (docs/testing.md). Needs the
# stack's ports free: it stops the stack first.
test-containers: install stack-down
	scripts/test-containers run

# The proofs of docs/performance.md and docs/reliability.md (long; CI runs small versions).
# make bench: baselines A (raw confluent-kafka), B (quixstreams), C (PostgreSQL bulk) and the
# worker with a 0 ms and a 100 ms sandbox gateway, in one run (about 10 minutes on 2 cores);
# sizes by BENCH_ARGS, e.g. BENCH_ARGS="--commands 50000 --worker-seconds 60", or --smoke
# (python -m bench --help lists them).
bench: install stack-up
	$(BIN)/python -m bench $(BENCH_ARGS)

# RSS over 1,000,000 commands and 200,000 users (DESIGN.md §6); e.g. BENCH_MEMORY_ARGS=--through-kafka
bench-memory: install stack-up
	$(BIN)/python -m bench.memory $(BENCH_MEMORY_ARGS)

chaos: install
	$(BIN)/python -m bench.chaos

chaos-small: install
	$(BIN)/python -m bench.chaos --small

scale-proof: install stack-up
	$(BIN)/python -m bench.scaling --rate 100 --phase-seconds 40 --json .bench/scaling.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
