# The README's entry points. Every target sets up what it needs on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= examples/broker.yaml

.PHONY: install run run-packages test-packages test-servers test demo bench lint proto clean \
  screenshots

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## run: the example upstream and the broker with examples/broker.yaml; Ctrl-C stops both
run: install run-packages
	$(PY) examples/run_dev.py --config $(CONFIG)

# Debian packages: bubblewrap and util-linux (the sandbox), poppler-utils (the example pdftotext
# tool); the tests also run a real nginx, PostgreSQL (pg_ctlcluster comes with Debian's
# postgresql, whose servers live in /usr/lib/postgresql) and Redis. Installed when missing and we
# may (root with apt-get); otherwise the make says what to install (tests that need one skip,
# saying why; in CI they fail).
RUN_PACKAGES  := bwrap:bubblewrap pdftotext:poppler-utils prlimit:util-linux
TEST_PACKAGES := $(RUN_PACKAGES) nginx:nginx-light pg_ctlcluster:postgresql \
  redis-server:redis-server chromium:chromium

run-packages:
	@$(call install_missing,$(RUN_PACKAGES))

test-packages:
	@$(call install_missing,$(TEST_PACKAGES))

# $(1): command:package pairs; the packages of the commands that are not found
define install_missing
missing=""; for pair in $(1); do command -v "$${pair%%:*}" >/dev/null || \
  [ -x "/usr/sbin/$${pair%%:*}" ] || missing="$$missing $${pair#*:}"; done; \
if [ -n "$$missing" ]; then \
  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
  else \
    echo "not installed:$$missing (Debian: apt-get install$$missing); tests that need them skip"; \
  fi; \
fi
endef

## test: the whole suite (pytest's "no tests collected", exit 5, fails like any other error)
test: install test-packages test-servers
	$(PY) -m pytest

# Servers the tests start that no Debian package has: MinIO (the S3 audit witness), pinned by
# hash (tests/servers/fetch_minio.py says where it comes from)
test-servers: install
	$(PY) -m tests.servers.fetch_minio $(VENV)/bin/minio

## screenshots: each page of the web console into docs/console/, taken by its browser tests
screenshots: install test-packages
	CONSOLE_SCREENSHOTS=docs/console $(PY) -m pytest -q -p no:cacheprovider \
	  tests/test_console_pages.py -k "every_page_is_accessible and sqlite"

## demo: a scripted agent against the broker that `make run` started
demo: install
	$(PY) examples/demo_agent.py --config $(CONFIG)

## bench: broker vs. direct side by side, policy decisions at scale, a rate-limited burst, the
## untrusted-content detector on BIPIA (development figures), the cost of each stage and of the
## audit trail, small calls beside big answers, the import time of the SDK, the provenance
## check against 1 MB of outside text, time-based checkpoints and witnesses, SQLite against
## PostgreSQL and two workers; each rewrites its section of BENCHMARKS.md
bench: install test-packages
	$(PY) -m tests.bench.bench_call_path --write BENCHMARKS.md
	$(PY) -m tests.bench.bench_policy --write BENCHMARKS.md
	$(PY) -m tests.bench.bench_burst --write BENCHMARKS.md
	$(PY) -m tests.bench.eval_injection --write BENCHMARKS.md
	$(PY) -m tests.bench.bench_stages --write BENCHMARKS.md
	$(PY) -m tests.bench.bench_audit --write BENCHMARKS.md
	$(PY) -m tests.bench.bench_big_answers --write BENCHMARKS.md
	$(PY) -m tests.bench.bench_imports --write BENCHMARKS.md
	$(PY) -m tests.bench.bench_provenance --write BENCHMARKS.md
	$(PY) -m tests.bench.bench_witnesses --write BENCHMARKS.md
	$(PY) -m tests.bench.bench_mcp --write BENCHMARKS.md
	$(PY) -m tests.bench.bench_replicas --write BENCHMARKS.md

lint: install
	$(VENV)/bin/ruff check broker tests examples
	$(VENV)/bin/ruff format --check broker tests examples
	$(VENV)/bin/mypy broker

## proto: regenerate broker/v1 from proto/ (committed; a test checks it is current)
proto: install
	$(PY) -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. proto/broker/v1/broker.proto

clean:
	rm -rf $(VENV) .broker .pytest_cache .mypy_cache .ruff_cache
