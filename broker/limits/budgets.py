"""Budgets: how many calls and cost units an agent may spend per UTC day, per task, and per
tool. Use is counted in the database (it survives a restart), in memory for the check; with
replicas (a shared state), in the database for the check too: one transaction per charge."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from broker import errors
from broker.storage.interfaces import BudgetStore, SharedBudgetStore
from broker.storage.records import Charge, Usage

log = logging.getLogger(__name__)
ALERT_LEVELS = (80, 100)  # percent
SWEEP_EVERY = 1000  # budget reads between two sweeps of the in-memory counters
IDLE_S = 600.0  # a counter not spent from for this long is read back from the store
MAX_CACHED = 50_000  # counters held at most (every task has its own)


@dataclass(frozen=True)
class Allowance:
    """One budget a call spends from: its scope, its period, its limits and when it resets."""

    scope: str  # agent:<a> | task:<a>:<task> | tool:<a>:<tool.action>
    period: str  # a UTC day (2026-11-25), or "task"
    label: str  # for people: "invoice-agent's daily calls"
    calls: int | None
    cost: int | None
    resets_at: float | None  # unix seconds; None for a task (it never resets)


def today() -> tuple[str, float]:
    """The current UTC day and the unix time it ends."""
    now = datetime.now(UTC)
    end = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return now.strftime("%Y-%m-%d"), end.timestamp()


class Budgets:
    """Checks and counts budget use; alerts once at 80% and once at 100% of each budget."""

    def __init__(
        self,
        store: BudgetStore,
        alert: Callable[[str], None],
        observe: Callable[[str, float], None] | None = None,
        shared: SharedBudgetStore | None = None,
    ) -> None:
        self._store = store
        self._shared = shared  # replicas: every charge checked against what all have spent
        self._alert = alert
        self._observe = observe
        self._used: dict[tuple[str, str], list[int]] = {}  # [calls, cost, alerted]
        self._touched: dict[tuple[str, str], float] = {}  # key -> time.monotonic() of last use
        self._until_sweep = SWEEP_EVERY

    async def charge(self, allowances: list[Allowance], cost: int) -> None:
        """Spend one call and ``cost`` units from every allowance, or none of them:
        BUDGET_EXCEEDED saying which budget and when it resets. The check and the spending
        run without an await in between, so concurrent calls cannot both take the last unit;
        with replicas, in one transaction of the shared store."""
        if self._shared is not None:
            await self._charge_shared(allowances, cost)
            return
        counters = [await self._get(allowance) for allowance in allowances]
        for allowance, used in zip(allowances, counters, strict=True):
            for kind, limit, spent, more in (
                ("calls", allowance.calls, used[0], 1),
                ("cost units", allowance.cost, used[1], cost),
            ):
                if limit is not None and spent + more > limit:
                    raise errors.BudgetExceeded(
                        _refusal(allowance, kind, spent, limit),
                        retry_after=_until(allowance.resets_at),
                    )
        for allowance, used in zip(allowances, counters, strict=True):
            used[0] += 1
            used[1] += cost
            level = _level(allowance, used)
            alerted = used[2]
            if level > alerted:
                used[2] = level
                self._alert(
                    f"{allowance.label}: {level}% used ({used[0]} calls, {used[1]} "
                    f"cost units of {_limits(allowance)})"
                )
            self._store.add_usage(allowance.scope, allowance.period, Usage(1, cost, used[2]))
            if self._observe is not None:
                self._observe(allowance.scope, _ratio(allowance, used))

    async def _charge_shared(self, allowances: list[Allowance], cost: int) -> None:
        assert self._shared is not None
        charges = [Charge(a.scope, a.period, a.calls, a.cost) for a in allowances]
        by_charge = dict(zip(charges, allowances, strict=True))

        def level(charge: Charge, usage: Usage) -> int:
            return _level(by_charge[charge], [usage.calls, usage.cost])

        spent = await self._shared.spend(charges, cost, level)
        if spent.refused is not None:
            allowance, used = allowances[spent.refused], spent.usages[spent.refused]
            kind, spent_so_far, limit = (
                ("calls", used.calls, allowance.calls)
                if allowance.calls is not None and used.calls + 1 > allowance.calls
                else ("cost units", used.cost, allowance.cost or 0)
            )
            raise errors.BudgetExceeded(
                _refusal(allowance, kind, spent_so_far, limit),
                retry_after=_until(allowance.resets_at),
            )
        for allowance, usage, raised in zip(allowances, spent.usages, spent.raised, strict=True):
            if raised:
                self._alert(
                    f"{allowance.label}: {usage.alerted}% used ({usage.calls} calls, "
                    f"{usage.cost} cost units of {_limits(allowance)})"
                )
            if self._observe is not None:
                self._observe(allowance.scope, _ratio(allowance, [usage.calls, usage.cost]))

    @property
    def cached(self) -> int:
        """How many budgets are held in memory."""
        return len(self._used)

    def sweep(self, now: float) -> None:
        """Forget budgets not spent from for IDLE_S (the store has them: the next charge
        reads them back), then the idlest beyond MAX_CACHED. IDLE_S is far longer than a
        queued write takes to commit, so nothing read back misses a spending."""
        self._until_sweep = SWEEP_EVERY
        idle = [key for key, at in self._touched.items() if now - at > IDLE_S]
        if len(self._touched) - len(idle) > MAX_CACHED:
            by_age = sorted(self._touched, key=self._touched.__getitem__)
            idle = by_age[: len(by_age) - MAX_CACHED]
        for key in idle:
            self._used.pop(key, None)
            self._touched.pop(key, None)

    async def _get(self, allowance: Allowance) -> list[int]:
        key = (allowance.scope, allowance.period)
        now = time.monotonic()
        self._until_sweep -= 1
        if self._until_sweep <= 0:
            self.sweep(now)
        self._touched[key] = now
        used = self._used.get(key)
        if used is None:
            stored = await self._store.usage(allowance.scope, allowance.period)
            # another call may have read it meanwhile: keep the first, it may have spent
            used = self._used.setdefault(key, [stored.calls, stored.cost, stored.alerted])
        return used


def _ratio(allowance: Allowance, used: list[int]) -> float:
    return max(
        used[0] / allowance.calls if allowance.calls else 0.0,
        used[1] / allowance.cost if allowance.cost else 0.0,
    )


def _level(allowance: Allowance, used: list[int]) -> int:
    reached = [level for level in ALERT_LEVELS if _ratio(allowance, used) * 100 >= level]
    return max(reached, default=0)


def _limits(allowance: Allowance) -> str:
    parts = []
    if allowance.calls is not None:
        parts.append(f"{allowance.calls} calls")
    if allowance.cost is not None:
        parts.append(f"{allowance.cost} cost units")
    return " / ".join(parts)


def _refusal(allowance: Allowance, kind: str, spent: int, limit: int) -> str:
    if allowance.resets_at is None:
        when = "it does not reset: start a new task"
    else:
        when = f"it resets at {datetime.fromtimestamp(allowance.resets_at, UTC):%Y-%m-%d %H:%MZ}"
    return f"{allowance.label}: {spent} of {limit} {kind} used; {when}"


def _until(resets_at: float | None) -> float | None:
    return None if resets_at is None else max(0.0, resets_at - time.time())
