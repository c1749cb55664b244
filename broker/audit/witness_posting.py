"""Posting checkpoints to witnesses, in the audit writer process, without ever holding it up.

Each witness gets a thread and a queue. A checkpoint is posted once, in order; a failure is
retried with a growing pause (RETRY_FIRST_S doubling to RETRY_MOST_S) until it is taken, while
new checkpoints queue behind it (at most MAX_QUEUED: past that the oldest goes, since the
newest head proves the most). While a witness is down, calls go on: the writer logs an error
when it goes down and when it is back, and reports its state to the broker after every attempt
(``report``), which exports it as metrics. At the stop, the queues get STOP_WAIT_S to drain; what
is left is logged by seq, so an operator knows which checkpoints no witness holds.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from broker.audit.checkpoints import Checkpoint
from broker.audit.witnesses import Witness, WitnessError

log = logging.getLogger("broker.audit.witnesses")

RETRY_FIRST_S = 0.5
RETRY_MOST_S = 30.0
MAX_QUEUED = 10_000
STOP_WAIT_S = 3.0


@dataclass(frozen=True)
class WitnessState:
    """How a witness is doing: checkpoints waiting for it, failed attempts so far, whether
    the last attempt failed (and why)."""

    witness: str
    waiting: int
    failures: int
    down: bool
    error: str = ""


Report = Callable[[WitnessState], None]


class Poster:
    """Posts checkpoints to one witness from a thread of its own."""

    def __init__(self, witness: Witness, report: Report) -> None:
        self.witness = witness
        self._report = report
        self._queue: collections.deque[Checkpoint] = collections.deque()
        self._lock = threading.Condition()
        self._stopping = False
        self._failures = 0
        self._down = False
        self._thread = threading.Thread(
            target=self._run, name=f"witness {witness.name}", daemon=True
        )
        self._thread.start()

    def put(self, mark: Checkpoint) -> None:
        """Queue a checkpoint (never blocks)."""
        with self._lock:
            if len(self._queue) >= MAX_QUEUED:
                dropped = self._queue.popleft()
                log.error(
                    "audit witness %s: %d checkpoints wait; dropping the oldest (record %d)",
                    self.witness.name,
                    MAX_QUEUED,
                    dropped.seq,
                )
            self._queue.append(mark)
            self._lock.notify()

    def stop(self, deadline: float) -> list[Checkpoint]:
        """Post what is queued until ``deadline`` (time.monotonic); what is left."""
        with self._lock:
            self._stopping = True
            self._lock.notify()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            return list(self._queue)

    def _run(self) -> None:
        pause = RETRY_FIRST_S
        while True:
            with self._lock:
                while not self._queue and not self._stopping:
                    self._lock.wait()
                if not self._queue:
                    return
                mark = self._queue[0]
            try:
                self.witness.post(mark)
            except WitnessError as exc:
                self._failed(str(exc))
                with self._lock:  # a stop cuts the pause short; the queue stays for the log
                    if self._stopping:
                        self._lock.wait(min(pause, 0.2))
                    else:
                        self._lock.wait(pause)
                pause = min(pause * 2, RETRY_MOST_S)
                continue
            pause = RETRY_FIRST_S
            with self._lock:
                if self._queue and self._queue[0] is mark:
                    self._queue.popleft()
            self._held()

    def _failed(self, error: str) -> None:
        self._failures += 1
        if not self._down:
            log.error(
                "audit witness %s is down (%s): its checkpoints wait; calls go on",
                self.witness.name,
                error,
            )
        self._down = True
        self._tell(error)

    def _held(self) -> None:
        if self._down:
            log.warning("audit witness %s is back", self.witness.name)
        self._down = False
        self._tell()

    def _tell(self, error: str = "") -> None:
        with self._lock:
            waiting = len(self._queue)
        state = WitnessState(self.witness.name, waiting, self._failures, self._down, error)
        with contextlib.suppress(OSError):  # the broker is gone: nobody to tell
            self._report(state)


class Posters:
    """Every configured witness's poster."""

    def __init__(self, witnesses: list[Witness], report: Report) -> None:
        self._posters = [Poster(witness, report) for witness in witnesses]

    def put(self, mark: Checkpoint) -> None:
        """Queue a checkpoint for every witness."""
        for poster in self._posters:
            poster.put(mark)

    def stop(self, wait_s: float = STOP_WAIT_S) -> None:
        """Give the queues ``wait_s`` to drain; log what no witness took."""
        deadline = time.monotonic() + wait_s
        for poster in self._posters:
            left = poster.stop(deadline)
            if left:
                log.error(
                    "audit witness %s did not take %d checkpoint(s) before the stop: records %s",
                    poster.witness.name,
                    len(left),
                    ", ".join(str(mark.seq) for mark in left[-20:]),
                )
