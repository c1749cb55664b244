"""How a worker process (``broker.workers``) yields the CPU to the broker's event loop, without
starving when the machine is busy.

A worker cleaning a 4 MiB page is CPU-bound for most of a second. At a higher nice value (or
as SCHED_BATCH) it still held the loop's core often enough that, on 2 cores, small calls beside
big pages had a p99 3x their p99 alone: the kernel lets a running task go on for its slice
before a waking one runs. As SCHED_IDLE it runs only when no other task wants the core, and
the ratio fell to ~1.5x (measured side by side, BENCHMARKS.md "Big answers").

SCHED_IDLE alone would starve on a machine kept busy by other processes: a page could wait
minutes. So a watchdog thread (at normal priority) samples the job's CPU time every WATCH_S;
when a job got less than STARVED_SHARE of a core in that time, the worker returns to
SCHED_OTHER (at WORKER_NICENESS) for the rest of the job; each job starts idle again. Leaving
SCHED_IDLE needs CAP_SYS_NICE or a high enough RLIMIT_NICE: where a trial shows the worker
could not come back, or the policies do not exist, it never goes idle and stays at
WORKER_NICENESS.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

WORKER_NICENESS = 5
WATCH_S = 0.5
STARVED_SHARE = 0.1  # of one core, over WATCH_S


def _set_policy(thread_id: int, policy: int) -> bool:
    try:
        os.sched_setscheduler(thread_id, policy, os.sched_param(0))
    except (AttributeError, OSError):
        return False
    return True


def _can_go_idle_and_back() -> bool:
    """True when a thread here may enter SCHED_IDLE and leave it again (tried on a thread of
    its own, which then ends)."""
    if not hasattr(os, "SCHED_IDLE"):
        return False
    result: list[bool] = []

    def trial() -> None:
        me = threading.get_native_id()
        result.append(_set_policy(me, os.SCHED_IDLE) and _set_policy(me, os.SCHED_OTHER))

    thread = threading.Thread(target=trial, name="priority trial")
    thread.start()
    thread.join()
    return result == [True]


class Priority:
    """The worker's main thread (which runs the jobs): idle while that does not starve it."""

    def __init__(self) -> None:
        with contextlib.suppress(OSError):
            os.nice(WORKER_NICENESS)
        self._thread = threading.get_native_id()
        self._clock = time.pthread_getcpuclockid(threading.get_ident())
        self._lock = threading.Lock()
        self._working = False
        self._since = (0.0, 0.0)  # (CPU seconds, monotonic seconds) at the last look
        self.idles = _can_go_idle_and_back()
        if self.idles:
            threading.Thread(target=self._watch, name="priority watchdog", daemon=True).start()

    def job_starts(self) -> None:
        """A job begins: yield to everything else while that does not starve it."""
        if not self.idles:
            return
        with self._lock:
            self._working = True
            self._since = (time.clock_gettime(self._clock), time.monotonic())
        _set_policy(self._thread, os.SCHED_IDLE)

    def job_ends(self) -> None:
        """The job is done: nothing to watch until the next."""
        with self._lock:
            self._working = False

    def _watch(self) -> None:
        while True:
            time.sleep(WATCH_S)  # the watchdog's period: how soon a starving job is seen
            with self._lock:
                if not self._working:
                    continue
                cpu, wall = time.clock_gettime(self._clock), time.monotonic()
                share = (cpu - self._since[0]) / max(wall - self._since[1], 1e-9)
                self._since = (cpu, wall)
                if share < STARVED_SHARE:  # starving: back to a fair share for this job
                    _set_policy(self._thread, os.SCHED_OTHER)
