"""Stage ``confirm``: calls that need a human wait for one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace

from broker import errors
from broker.approvals.service import Approvals
from broker.pipeline import Call, Handler, Outcome
from broker.signing import now_ms
from broker.storage.interfaces import TaintStore
from broker.untrusted import TaintedValue
from broker.untrusted.outside_text import segment_of_texts
from broker.untrusted.outside_view import OutsideTexts, OutsideView
from broker.untrusted.paths import leaves
from broker.untrusted.text_index import MIN_NEEDLE
from broker.untrusted.text_keeper import TextKeeper


class ConfirmStage:
    """Asks the policy whether a human must approve (a write, a condition that holds, values
    from untrusted content). If so, the call is stored as pending and the agent gets
    PENDING_APPROVAL; it runs only after a human approves it. A call that goes on leaves its
    arguments and intent as the agent's own words for the task: a value the agent said before
    any outside text held it is the agent's, not the outside's."""

    needs = frozenset({"verified", "action", "grant", "arguments"})
    provides = frozenset[str]()

    def __init__(
        self,
        approvals: Approvals,
        taint: TaintStore,
        keeper: TextKeeper,
        settle: Callable[..., Awaitable[None] | None],
    ) -> None:
        self._approvals = approvals
        self._taint = taint
        self._keeper = keeper
        self._settle = settle  # the store's: outside text is written after a read's answer
        self._outside = OutsideTexts(taint)

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        outside: OutsideView | None = None
        now = now_ms()
        if call.action.is_write:  # outside values and text seen earlier in this task
            settled = self._settle(durable=True, lazy=True)  # on disk, whatever came before
            if settled is not None:
                await settled
            policy = call.snapshot.policies.policies[call.agent]
            since = now - int(policy.taint_window * 1000) if policy.taint_window else now + 1
            seen = await self._taint.values(call.agent, call.request.task_id, since)
            call.tainted = [TaintedValue(row.kind, row.value, row.origin) for row in seen]
            outside = await self._outside.view(call.agent, call.request.task_id, since)
        decision = call.snapshot.policies.approval_for(
            call.grant, call.action, call.arguments, call.tainted, outside
        )
        if decision.outcome == "deny":
            raise errors.ArgumentNotAllowed(decision.message)
        if decision.outcome == "approval":
            return await self._approvals.ask(call, decision)
        await self._remember_own_words(call, now)
        return await call_next(call)

    async def _remember_own_words(self, call: Call, now: int) -> None:
        texts = list(leaves(call.arguments, "$", numbers=True))
        if call.request.intent:
            texts.append(("intent", call.request.intent))
        origin = f"{call.action.full_name} (call {call.call_id})"
        segment = segment_of_texts(texts, "own", origin)
        if segment.letters >= MIN_NEEDLE:
            stored = replace(segment, task_id=call.request.task_id, at_ms=now)
            await self._keeper.keep(call.agent, stored)
