"""Loop detection: the same agent calling the same tool with identical arguments again and
again. An agent that loops on a tool error goes from 2 calls a day to 40 and nobody notices."""

from __future__ import annotations

from collections import deque

from broker import errors
from broker.policy.model import LoopGuard
from broker.storage.records import Attempt

DAY_MS = 86_400_000
# Refusals decided before loop detection runs: such calls never counted as attempts.
_NOT_ATTEMPTS = {
    "BAD_SIGNATURE",
    "UNKNOWN_KEY",
    "KEY_REVOKED",
    "WRONG_AUDIENCE",
    "METHOD_MISMATCH",
    "STALE_REQUEST",
    "REPLAYED_NONCE",
    "MALFORMED_ENVELOPE",
    "AGENT_FROZEN",
    "UNKNOWN_TOOL",
    "TOOL_NOT_GRANTED",
    "INVALID_ARGUMENTS",
    "ARGUMENT_NOT_ALLOWED",
    "LOOP_DETECTED",
    "IDEMPOTENCY_KEY_REQUIRED",
    "IDEMPOTENCY_KEY_REUSED",
}
HISTORY_MS = 3_600_000  # windows longer than an hour are cut to an hour after a restart
SWEEP_EVERY = 1000  # checks between two sweeps of the windows no call touched for a day
MAX_WINDOWS = 100_000  # distinct (agent, tool, arguments) kept at most; the idlest go first


class LoopDetector:
    """Sliding windows of identical calls, and the loops each agent tripped in the last day;
    rebuilt from the audit table at start, so a restart forgets nothing."""

    def __init__(self, history: list[Attempt], now_ms: int) -> None:
        """``history``: the calls of the last day (AuditReader.attempts)."""
        self._calls: dict[tuple[str, str, str], deque[int]] = {}
        self._trips: dict[str, deque[int]] = {}
        self._until_sweep = SWEEP_EVERY
        for ts, agent, tool, digest, _decision, reason in history:
            if reason == "LOOP_DETECTED":
                self._trips.setdefault(agent, deque()).append(ts)
            elif reason not in _NOT_ATTEMPTS and ts >= now_ms - HISTORY_MS and digest:
                self._calls.setdefault((agent, tool, digest), deque()).append(ts)

    def check(self, agent: str, tool: str, digest: str, guard: LoopGuard, now_ms: int) -> str:
        """Count this call: ``ok``; ``loop`` when it would be the ``repeats``-th identical
        call within the window; ``freeze`` when that makes ``freeze_after`` loops in a day."""
        self._until_sweep -= 1
        if self._until_sweep <= 0:
            self.sweep(now_ms)
        window = self._calls.setdefault((agent, tool, digest), deque())
        horizon = now_ms - int(guard.within * 1000)
        while window and window[0] < horizon:
            window.popleft()
        if len(window) + 1 < guard.repeats:
            window.append(now_ms)
            return "ok"
        trips = self._trips.setdefault(agent, deque())
        while trips and trips[0] < now_ms - DAY_MS:
            trips.popleft()
        trips.append(now_ms)
        return "freeze" if len(trips) >= guard.freeze_after else "loop"

    def sweep(self, now_ms: int) -> None:
        """Forget windows and trips older than a day (no guard looks further back: a longer
        ``within`` is cut to a day), then the idlest windows beyond MAX_WINDOWS: every
        argument set an agent ever tried must not stay in memory for good."""
        self._until_sweep = SWEEP_EVERY
        day_ago = now_ms - DAY_MS
        self._calls = {key: w for key, w in self._calls.items() if w and w[-1] >= day_ago}
        self._trips = {agent: t for agent, t in self._trips.items() if t and t[-1] >= day_ago}
        if len(self._calls) > MAX_WINDOWS:
            newest = sorted(self._calls.items(), key=lambda item: item[1][-1])
            self._calls = dict(newest[-MAX_WINDOWS:])

    @property
    def windows(self) -> int:
        """How many (agent, tool, arguments) windows are held."""
        return len(self._calls)

    def trips_today(self, agent: str) -> int:
        """How many loops ``agent`` tripped in the last day."""
        return len(self._trips.get(agent, ()))

    @staticmethod
    def refusal(tool: str, guard: LoopGuard, retry_in: float) -> errors.LoopDetected:
        """The error for a detected loop."""
        return errors.LoopDetected(
            f"{tool} was called {guard.repeats} times with identical arguments within "
            f"{guard.within:g}s; the agent seems to loop. Change approach instead of retrying",
            retry_after=retry_in,
        )

    def retry_in(self, agent: str, tool: str, digest: str, guard: LoopGuard, now_ms: int) -> float:
        """Seconds until the oldest identical call leaves the window."""
        window = self._calls.get((agent, tool, digest))
        if not window:
            return 0.0
        return max(0.0, (window[0] + guard.within * 1000 - now_ms) / 1000)
