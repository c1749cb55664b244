# The README's entry points. Every target sets up what it needs on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= examples/broker.yaml

.PHONY: install run test demo bench lint proto clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## run: the example upstream and the broker with examples/broker.yaml; Ctrl-C stops both
run: install
	$(PY) examples/run_dev.py --config $(CONFIG)

## test: the whole suite (pytest's "no tests collected", exit 5, fails like any other error)
test: install
	$(PY) -m pytest

## demo: a scripted agent against the broker that `make run` started
demo: install
	$(PY) examples/demo_agent.py --config $(CONFIG)

## bench: broker vs. direct, side by side; writes BENCHMARKS.md
bench: install
	$(PY) -m tests.bench.bench_call_path --write BENCHMARKS.md

lint: install
	$(VENV)/bin/ruff check broker tests examples
	$(VENV)/bin/ruff format --check broker tests examples
	$(VENV)/bin/mypy broker

## proto: regenerate broker/v1 from proto/ (committed; a test checks it is current)
proto: install
	$(PY) -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. proto/broker/v1/broker.proto

clean:
	rm -rf $(VENV) .broker .pytest_cache .mypy_cache .ruff_cache
