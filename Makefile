# Every target bootstraps .venv itself: `make run` needs only python3 (3.11+) and make.
# Test-only tools (promtool, from Debian's prometheus package; etcd, from etcd-server) are installed by `make test`
# alone; where apt-get or root is missing it says so in one line and their tests skip.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-server
DEV_STAMP := $(VENV)/.installed-dev
# What `make run` serves: the typed tasks of examples/tasks.py (examples/quickstart.py calls
# them) and the raw handlers echo, sleep and json (examples/raw_submit.py, examples/cli.sh).
RUN_MODULES := examples.tasks tq.worker.examples

.PHONY: run test test-tools chaos check bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# tq with the broker's dependencies (the `server` extra).
$(RUN_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[server]'
	touch $@

# ... plus the test and lint tools.
$(DEV_STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[server,dev]'
	touch $@

# A broker (data in ./.tq-data, port 7420) plus one worker of $(RUN_MODULES);
# prints its addresses and commands to try. Ctrl-C stops both.
run: $(RUN_STAMP)
	$(BIN)/tq dev $(RUN_MODULES)

test-tools:
	scripts/install-test-deps prometheus etcd-server

test: $(DEV_STAMP) test-tools
	$(BIN)/python -m pytest -q -n 2 --timeout=300

# The cluster's fault tests alone (3 etcd members, 3 brokers; about 2 minutes), with the figures
# each fault yields (failover_s, write_gap_s, what the checker counted) printed.
chaos: $(DEV_STAMP) test-tools
	$(BIN)/python -m pytest -q -s tests/cluster/test_chaos.py

check: $(DEV_STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(RUN_STAMP)
	$(BIN)/python benchmarks/foundation_bench.py
	$(BIN)/tq bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
