# Every target bootstraps .venv itself: a fresh machine needs only python3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: run test check bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	scripts/install-test-deps prometheus
	touch $(STAMP)

# A broker (data in ./.tq-data, port 7420) plus one worker of the example handlers
# (tq.worker.examples); prints how to submit a task. Ctrl-C stops both.
run: $(STAMP)
	$(BIN)/tq dev

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --timeout=300

check: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python benchmarks/foundation_bench.py
	$(BIN)/tq bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
