"""Stage ``budget``: calls and cost units per agent per day, per task, and per tool."""

from __future__ import annotations

from broker.limits.budgets import Allowance, Budgets, today
from broker.pipeline import Call, Handler, Outcome


class BudgetStage:
    """RESOURCE_EXHAUSTED BUDGET_EXCEEDED, saying which budget and when it resets, once an
    agent's calls or cost units for the day, the task, or the tool are spent."""

    needs = frozenset({"verified", "action", "grant"})
    provides = frozenset[str]()

    def __init__(self, budgets: Budgets) -> None:
        self._budgets = budgets

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        await self._budgets.charge(allowances(call), call.action.spec.cost)
        return await call_next(call)


def allowances(call: Call) -> list[Allowance]:
    """The budgets this call spends from, by its agent's policy."""
    agent = call.agent
    limits = call.snapshot.policies.policies[agent].limits
    tool = call.grant.grant.budget
    if (
        tool is None
        and limits.calls_per_day is None
        and limits.cost_per_day is None
        and (limits.calls_per_task is None and limits.cost_per_task is None)
    ):
        return []  # no budget to spend from: nothing to look up
    day, day_ends = today()
    found = []
    if limits.calls_per_day is not None or limits.cost_per_day is not None:
        found.append(
            Allowance(
                f"agent:{agent}",
                day,
                f"{agent}'s budget for today",
                limits.calls_per_day,
                limits.cost_per_day,
                day_ends,
            )
        )
    task = call.request.task_id
    if task and (limits.calls_per_task is not None or limits.cost_per_task is not None):
        found.append(
            Allowance(
                f"task:{agent}:{task}",
                "task",
                f"{agent}'s budget for task {task}",
                limits.calls_per_task,
                limits.cost_per_task,
                None,
            )
        )
    if tool is not None:
        name = call.action.full_name
        found.append(
            Allowance(
                f"tool:{agent}:{name}",
                day,
                f"{agent}'s budget of {name} today",
                tool.calls_per_day,
                tool.cost_per_day,
                day_ends,
            )
        )
    return found
