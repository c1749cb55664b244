"""A broker as users run it: ``python -m broker run`` in a process of its own (optionally a
process group of its own, as systemd and a terminal give it), its log in a file."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from broker import errors
from broker.client import BrokerClient


def start_broker(
    config: str, log: Path, *extra: str, own_group: bool = False
) -> subprocess.Popen[bytes]:
    """Start ``broker run --config`` (and ``extra`` options); ``own_group``: in a new session
    and process group."""
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "broker", "run", "--config", config, *extra],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=own_group,
        )


def bound_port(process: subprocess.Popen[bytes], log: Path, seconds: float = 30.0) -> int:
    """The port the broker bound (it listens on port 0: a port picked here and handed to it
    could be taken meanwhile by another suite running on the machine)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = re.search(r"serving on port (\d+)", log.read_text(errors="replace"))
        if found:
            return int(found.group(1))
        assert process.poll() is None, "the broker exited:\n" + log.read_text(errors="replace")
        time.sleep(0.05)  # the broker process is starting; bounded by the deadline
    raise AssertionError("the broker did not start")


def wait_serving(client: BrokerClient, seconds: float = 20.0) -> None:
    """Until the broker answers ListTools."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            client.list_tools(timeout=1)
            return
        except errors.BrokerError:
            time.sleep(0.1)  # the broker process is starting; bounded by the deadline
    raise AssertionError("the broker did not start")


@contextmanager
def started_until(
    command: list[str],
    log: Path,
    ready: Callable[[str], str | None],
    *,
    env: Mapping[str, str] | None = None,
    seconds: float = 30.0,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A process of ours, logging to ``log``, once ``ready`` (given the log so far) returns
    what it waited for (a URL, a port); AssertionError with the log when it exits or does not
    get there in ``seconds``. Stopped (SIGTERM, then SIGKILL) at the end."""
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=None if env is None else dict(env),
        )
    try:
        deadline = time.monotonic() + seconds
        while (found := ready(log.read_text(errors="replace"))) is None:
            assert process.poll() is None, f"{command[1:4]} exited:\n{log.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"{command[1:4]} did not start:\n{log.read_text()}"
            time.sleep(0.05)  # the process is starting; bounded by the deadline
        yield found, process
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(15)
