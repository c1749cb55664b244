# The README's entry points. Every target sets up what it needs on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= examples/broker.yaml

.PHONY: install run sandbox-tools test demo bench lint proto clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## run: the example upstream and the broker with examples/broker.yaml; Ctrl-C stops both
run: install sandbox-tools
	$(PY) examples/run_dev.py --config $(CONFIG)

## sandbox-tools: bubblewrap (the sandbox) and pdftotext (an example tool), installed when
## missing and we may (root with apt-get); otherwise say what to install
sandbox-tools:
	@command -v bwrap >/dev/null && command -v pdftotext >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -q && apt-get install -y -q bubblewrap poppler-utils util-linux; \
	  else \
	    echo "command tools need bubblewrap and poppler-utils: apt-get install bubblewrap poppler-utils"; \
	  fi; }

## test: the whole suite (pytest's "no tests collected", exit 5, fails like any other error)
test: install
	$(PY) -m pytest

## demo: a scripted agent against the broker that `make run` started
demo: install
	$(PY) examples/demo_agent.py --config $(CONFIG)

## bench: broker vs. direct side by side, policy decisions at scale, a rate-limited burst, the
## untrusted-content detector on BIPIA (development figures), the cost of each stage and of the
## audit trail; each rewrites its section of BENCHMARKS.md
bench: install
	$(PY) -m tests.bench.bench_call_path --write BENCHMARKS.md
	$(PY) -m tests.bench.bench_policy --write BENCHMARKS.md
	$(PY) -m tests.bench.bench_burst --write BENCHMARKS.md
	$(PY) -m tests.bench.eval_injection --write BENCHMARKS.md
	$(PY) -m tests.bench.bench_stages --write BENCHMARKS.md
	$(PY) -m tests.bench.bench_audit --write BENCHMARKS.md

lint: install
	$(VENV)/bin/ruff check broker tests examples
	$(VENV)/bin/ruff format --check broker tests examples
	$(VENV)/bin/mypy broker

## proto: regenerate broker/v1 from proto/ (committed; a test checks it is current)
proto: install
	$(PY) -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. proto/broker/v1/broker.proto

clean:
	rm -rf $(VENV) .broker .pytest_cache .mypy_cache .ruff_cache
