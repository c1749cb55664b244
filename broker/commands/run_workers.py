"""``broker run --workers N``: N broker processes on one machine, sharing its port.

One Python event loop serves about 1,600 calls a second (BENCHMARKS.md); more cores need more
processes. Each worker is a whole broker (``broker run --worker I``): the port is shared with
SO_REUSEPORT (the kernel spreads connections), the state, the audit chain and the shared
limits are PostgreSQL's and Redis's, as for replicas on several machines, so workers need
``database_url``. This process only supervises: it makes the keys every worker signs with
(and any dev keys) before any starts (two making them at once would each use its own),
forwards SIGTERM, SIGINT and SIGHUP, starts again a worker that died, and stops when all have
stopped.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from broker.approvals.admin import admin_keys
from broker.audit.checkpoints import audit_key
from broker.errors import ConfigError
from broker.settings import BrokerSettings
from broker.snapshot import load_snapshot
from broker.storage.backend import postgres_url

log = logging.getLogger("broker.workers")

STARTING_S = 5.0  # a worker that fails sooner after its start failed to start: stop them all
RESTART_PAUSE_S = 1.0  # between a worker dying and its restart


def check_workers(settings: BrokerSettings, count: int) -> None:
    """ConfigError unless ``count`` workers can share this config."""
    if count < 1 or count > 256:
        raise ConfigError("--workers", "give between 1 and 256 workers")
    if postgres_url(settings) is None:
        raise ConfigError(
            "--workers",
            "workers share their state through PostgreSQL: set database_url (docs/replicas.md)",
        )
    if settings.listen.endswith(":0"):
        raise ConfigError("listen", "workers share one port: give listen a port, not 0")


def run_workers(config: Path, settings: BrokerSettings, count: int) -> int:
    """Start ``count`` workers and supervise them until a signal stops them; exit status."""
    audit_key(settings)
    admin_keys(settings)
    load_snapshot(settings)  # checks the files once, and makes any dev keys, before the workers
    started: dict[int, tuple[subprocess.Popen[bytes], float]] = {}
    stopping: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        if signum != signal.SIGHUP:
            stopping.append(signum)
        for process, _ in started.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM if signum != signal.SIGHUP else signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    for number in range(count):
        started[number] = (_start(config, number), time.monotonic())
    status = 0
    while started:
        pid, code = _wait_any()
        worker = next((w for w, (p, _) in started.items() if p.pid == pid), None)
        if worker is None:
            continue
        process, since = started.pop(worker)
        process.returncode = code
        if stopping:
            continue
        if code != 0 and time.monotonic() - since < STARTING_S:
            log.error("worker %d could not start (exit %d); stopping the others", worker, code)
            status = 1
            forward(signal.SIGTERM, None)
            continue
        log.error("worker %d stopped (exit %d); starting it again", worker, code)
        time.sleep(RESTART_PAUSE_S)  # a worker dying at once again must not spin a core
        started[worker] = (_start(config, worker), time.monotonic())
    return status


def _start(config: Path, worker: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "broker", "run", "--config", str(config)]
    return subprocess.Popen([*command, "--worker", str(worker)])


def _wait_any() -> tuple[int, int]:
    """The pid and exit status of the next worker to stop."""
    pid, status = os.wait()  # retried by Python after a signal handler (PEP 475)
    return pid, os.waitstatus_to_exitcode(status)
