# The two commands of the README. Each creates the virtual environment on first use
# (Python >= 3.11 as python3) and installs ptyopt into it; nothing else is needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench-forward bench-engines bench-scale bench-batched transfer clean-cache

run: $(STAMP)
	$(BIN)/python -m ptyopt study=quickstart
	$(BIN)/python -m ptyopt report study=quickstart

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

bench-forward: $(STAMP)
	$(BIN)/python -m ptyopt.benchmarks.forward

bench-engines: $(STAMP)
	$(BIN)/python -m ptyopt.benchmarks.engines

bench-scale: $(STAMP)
	$(BIN)/python -m ptyopt.benchmarks.scale

bench-batched: $(STAMP)
	$(BIN)/python -m ptyopt.benchmarks.batched_trials

transfer: $(STAMP)
	$(BIN)/python -m ptyopt.benchmarks.transfer

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

clean-cache:
	rm -rf simulations/cache .jax_cache
