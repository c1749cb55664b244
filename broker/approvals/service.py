"""The approvals service: calls that wait for a human, the decisions, the timers, the freezes.

A pending call is stored whole, bound to a digest of exactly what will execute. A decision can
come from the CLI (the admin service) or from Slack, at any time, also after a restart: it is a
compare-and-set on the stored state, so a double click decides once. An approved call then runs
once, through the same journal, redact and execute stages as any call, and whoever waits in
Await is woken. Await itself only waits and reads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol

from broker import errors
from broker.approvals.call_events import CallEvents
from broker.approvals.stored_calls import (
    APPROVED,
    CANCELLED,
    DENIED,
    EXPIRED,
    FAILED,
    FINAL,
    PENDING,
    RECONCILED,
    UNKNOWN,
    decode,
    encode_error,
    new_record,
)
from broker.audit.events import event_row
from broker.audit.trail import AuditTrail
from broker.identity import RegisteredKey, Verified
from broker.pipeline import Call, Handler, Outcome
from broker.policy import Decision, Policy
from broker.signing import now_ms
from broker.snapshot import Snapshot
from broker.storage.interfaces import CallStore, FreezeStore
from broker.storage.records import CallRecord, Freeze
from broker.v1 import broker_pb2 as pb

log = logging.getLogger(__name__)


class Notifier(Protocol):
    """Where humans are asked: Slack, or the operator's command line."""

    def where(self, record: CallRecord, policy: Policy | None) -> str:
        """One line for the agent: where the question was asked."""

    async def asked(self, record: CallRecord, policy: Policy | None) -> None:
        """A call started to wait for a human."""

    async def reminded(self, record: CallRecord, policy: Policy | None) -> None:
        """Nobody decided by escalate_after."""

    async def decided(self, record: CallRecord) -> None:
        """The call was decided, ran, expired or was cancelled: tell the humans how it ended."""

    async def outcome_unknown(self, record: CallRecord) -> None:
        """A write's outcome was lost in a crash: a human must reconcile it."""

    async def alert(self, text: str) -> None:
        """Something humans must hear about: a budget at 80% or 100%, an automatic freeze."""


class Freezes:
    """The kill switch, per agent or for all (``*``): in memory for the check on every
    request, in the database so that a restart keeps it."""

    def __init__(self, store: FreezeStore) -> None:
        self._store = store
        self._frozen: dict[str, Freeze] = {}

    async def load(self) -> None:
        """Read the freezes in force (at start)."""
        self._frozen = await self._store.all()

    def check(self, agent: str) -> None:
        """Raise AGENT_FROZEN when ``agent`` (or every agent) is frozen."""
        for key in ("*", agent):
            entry = self._frozen.get(key)
            if entry is not None:
                scope = "every agent is" if key == "*" else f"agent '{agent}' is"
                raise errors.AgentFrozen(
                    f"{scope} frozen by {entry.by}: {entry.reason}; an operator lifts it with "
                    f"broker unfreeze {'--all' if key == '*' else agent}"
                )

    def entry(self, agent: str) -> Freeze | None:
        """The freeze that stops ``agent``: its own, or the one of every agent."""
        return self._frozen.get(agent) or self._frozen.get("*")

    def frozen(self, agent: str) -> bool:
        """True when ``agent`` (or every agent) is frozen."""
        return "*" in self._frozen or agent in self._frozen

    async def freeze(self, agent: str, reason: str, by: str) -> None:
        """Freeze ``agent`` (``*`` for all); durable before it returns."""
        freeze = Freeze(agent, reason, by, now_ms())
        await self._store.set(freeze)
        self._frozen[agent] = freeze

    async def unfreeze(self, agent: str) -> bool:
        """Lift a freeze; False when there was none."""
        lifted = await self._store.clear(agent)
        self._frozen.pop(agent, None)
        return lifted


class Approvals:
    """Pending calls: asking, deciding, expiring, running what was approved, waking Await."""

    def __init__(
        self,
        calls: CallStore,
        trail: AuditTrail,
        freezes: Freezes,
        notifier: Notifier,
        snapshot: Callable[[], Snapshot],
        run_approved: Handler,
        *,
        events: CallEvents | None = None,
        max_wait_s: float = 60.0,
    ) -> None:
        self.calls = calls
        self.freezes = freezes
        self.notifier = notifier
        self.snapshot = snapshot
        self._trail = trail
        self._run_approved = run_approved  # the pipeline of APPROVED_STAGES
        self._max_wait_s = max_wait_s
        self.events = events if events is not None else CallEvents()
        # approved calls running here: their stored outcome may be in before their final
        # audit record, and nobody is answered before that record is written
        self._running: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- asking ------------------------------------------------------------------------------

    async def ask(self, call: Call, decision: Decision) -> Outcome:
        """Store the call as pending and ask a human; PENDING_APPROVAL for the agent."""
        policy = call.snapshot.policies.policies[call.agent]
        now = now_ms()
        why = {
            "reason": decision.reason,
            "message": decision.message,
            "rule": decision.rule,
            "tainted": [list(t) for t in decision.tainted],
            "over": list(decision.over),
        }
        record = replace(
            new_record(call, PENDING, why, now),
            escalate_at_ms=now + int(policy.escalate_after * 1000),
            expires_at_ms=now + int(policy.expires_after * 1000),
        )
        if not await self.calls.insert(record):
            raise errors.CallInProgress(
                "another request with this idempotency key arrived at the same moment; "
                "send it again to get its answer"
            )
        self.spawn(self.notifier.asked(record, policy))
        return self.pending_outcome(record, policy)

    def pending_outcome(self, record: CallRecord, policy: Policy | None) -> Outcome:
        """The answer while a call waits: where it was asked, when to stop, when it expires."""
        note = (
            f"{self.notifier.where(record, policy)}; if nobody decides, stop at "
            f"{_clock(record.escalate_at_ms)} and resume with Await or the same "
            f"idempotency key; denied at {_clock(record.expires_at_ms)}"
        )
        return Outcome(
            state=pb.CallResult.PENDING_APPROVAL,
            call_id=record.call_id,
            approval_note=note,
            escalate_at_ms=record.escalate_at_ms,
            expires_at_ms=record.expires_at_ms,
        )

    # -- deciding ----------------------------------------------------------------------------

    async def decide(self, call_id: str, approve: bool, by: str, note: str = "") -> CallRecord:
        """Approve or deny a pending call, once: a second decision is ALREADY_DECIDED."""
        record = await self.calls.get(call_id)
        if record is None:
            raise errors.UnknownCall(f"no call '{call_id[:64]}'")
        now = now_ms()
        state = APPROVED if approve else DENIED
        if not await self.calls.transition(
            call_id, (PENDING,), state, decided_by=by, decided_ms=now, note=note, updated_ms=now
        ):
            current = await self._stored(call_id)
            who = f" by {current.decided_by}" if current.decided_by else ""
            raise errors.AlreadyDecided(f"call {call_id} is already {current.state}{who}")
        await self._record(record, state, by, note)
        if approve:
            self.spawn(self._run(call_id))
        else:
            await self._finished(call_id)
        return await self._stored(call_id)

    async def _stored(self, call_id: str) -> CallRecord:
        """A call known to be stored (retention drops only calls long final)."""
        record = await self.calls.get(call_id)
        if record is None:
            raise errors.InternalError(f"call {call_id} vanished from the calls table")
        return record

    async def _record(self, record: CallRecord, event: str, by: str, note: str = "") -> None:
        """The audit record of a decision about a stored call (who, and why)."""
        row = event_row(
            event,
            call_id=record.call_id,
            agent=record.agent,
            tool=record.tool,
            task_id=record.task_id,
            intent=record.intent,
            by=by,
            detail={"note": note} if note else None,
            policy_hash=self.snapshot().policies.digest,
        )
        await self._trail.record(row, record.call_id)

    async def reconcile(self, call_id: str, by: str, note: str) -> CallRecord:
        """A human has checked a write whose outcome was lost; it leaves the to-do list."""
        now = now_ms()
        if not await self.calls.transition(
            call_id,
            (UNKNOWN,),
            RECONCILED,
            decided_by=by,
            decided_ms=now,
            note=note,
            updated_ms=now,
        ):
            raise errors.AlreadyDecided(f"call {call_id} has no lost outcome to reconcile")
        record = await self._stored(call_id)
        await self._record(record, RECONCILED, by, note)
        return record

    async def freeze(self, agent: str, reason: str, by: str) -> int:
        """The kill switch: freeze ``agent`` (``*``: every agent) from the next request on, and
        cancel its pending calls; how many were cancelled."""
        await self.freezes.freeze(agent, reason, by)
        row = event_row(
            "frozen",
            call_id="",
            agent=agent,
            by=by,
            detail={"reason": reason},
            policy_hash=self.snapshot().policies.digest,
        )
        await self._trail.record(row, f"freeze of {agent}")
        return await self.cancel(agent, by, f"frozen: {reason}")

    async def unfreeze(self, agent: str, reason: str, by: str) -> bool:
        """Lift the freeze of ``agent`` (``*``: the one of every agent), recording who and
        why; False when there was none."""
        lifted = await self.freezes.unfreeze(agent)
        if lifted:
            row = event_row(
                "unfrozen",
                call_id="",
                agent=agent,
                by=by,
                detail={"reason": reason},
                policy_hash=self.snapshot().policies.digest,
            )
            await self._trail.record(row, f"unfreeze of {agent}")
        return lifted

    async def cancel(self, agent: str, by: str, reason: str) -> int:
        """Cancel the pending calls of ``agent`` (``*``: of every agent); how many."""
        pending = await self.calls.in_states((PENDING,), agent=None if agent == "*" else agent)
        count = 0
        for record in pending:
            now = now_ms()
            if await self.calls.transition(
                record.call_id,
                (PENDING,),
                CANCELLED,
                decided_by=by,
                decided_ms=now,
                note=reason,
                updated_ms=now,
            ):
                count += 1
                await self._record(record, CANCELLED, by, reason)
                await self._finished(record.call_id)
        return count

    async def _run(self, call_id: str) -> None:
        self._running.add(call_id)
        record = await self._stored(call_id)
        call = approved_call(record, self.snapshot())
        try:
            await self._run_approved(call)
        except errors.BrokerError as exc:
            # refused before it started (the policy changed, the agent was frozen): recorded
            # here; one that started has its outcome recorded by the journal already
            log.info("approved call %s ended with %s", call_id, exc.reason)
            await self.calls.transition(
                call_id, (APPROVED,), FAILED, outcome=encode_error(exc), updated_ms=now_ms()
            )
        except Exception:
            log.exception("approved call %s failed inside the broker", call_id)
            await self.calls.transition(
                call_id,
                (APPROVED,),
                FAILED,
                updated_ms=now_ms(),
                outcome=encode_error(errors.InternalError(f"internal error in call {call_id}")),
            )
        await self._finished(call_id)

    async def _finished(self, call_id: str) -> None:
        self._running.discard(call_id)
        self.events.wake(call_id, everywhere=True)
        record = await self.calls.get(call_id)
        if record is not None:
            self.spawn(self.notifier.decided(record))

    # -- waiting -----------------------------------------------------------------------------

    async def await_outcome(
        self, call_id: str, agent: str, wait_ms: int, time_left: float | None
    ) -> Outcome:
        """The call's outcome once it is known, waiting up to ``wait_ms`` (capped); a call
        still undecided answers PENDING_APPROVAL again."""
        record = await self.calls.get(call_id)
        if record is None or record.agent != agent:
            raise errors.UnknownCall(f"no call '{call_id[:64]}' of agent '{agent}'")
        wait = min(wait_ms / 1000, self._max_wait_s)
        if time_left is not None:
            wait = min(wait, max(0.0, time_left))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        # a wake is a hint, not the outcome: an approved run's own audit record wakes its
        # waiters before the run's refusal is stored, so look again until it is final
        while record.state not in FINAL or call_id in self._running:
            left = deadline - loop.time()
            if left <= 0:
                break  # still undecided: answered as pending
            await self.events.wait(call_id, left)
            record = await self._stored(call_id)
        if call_id in self._running:  # its outcome may be stored, its final record is not
            return self.pending_outcome(record, self.snapshot().policies.policies.get(agent))
        return self.answer(record)

    def answer(self, record: CallRecord) -> Outcome:
        """What a stored call means for its agent now; a refusal is raised."""
        if record.state in (PENDING, APPROVED) or record.state == "executing":
            policy = self.snapshot().policies.policies.get(record.agent)
            return self.pending_outcome(record, policy)
        if record.state == DENIED:
            raise errors.ApprovalDenied(
                f"{record.decided_by} denied call {record.call_id}"
                + (f": {record.note}" if record.note else "")
            )
        if record.state == CANCELLED:
            raise errors.ApprovalDenied(
                f"call {record.call_id} was cancelled by {record.decided_by}: {record.note}"
            )
        if record.state == EXPIRED:
            raise errors.ApprovalExpired(
                f"nobody decided call {record.call_id} before {_clock(record.expires_at_ms)}"
            )
        if record.state == "outcome_unknown":
            raise errors.OutcomeUnknown(
                f"call {record.call_id} began and its outcome was lost (the broker stopped); "
                "it will not run again: a human must check the tool and reconcile it"
            )
        if record.state == RECONCILED:
            raise errors.OutcomeUnknown(
                f"call {record.call_id}'s outcome was lost; {record.decided_by} checked the "
                f"tool: {record.note}. It will not run again; use a new key to act anew"
            )
        return decode(record.outcome, record.call_id)

    # -- timers ------------------------------------------------------------------------------

    async def tick(self) -> None:
        """Expire calls past expires_after; remind once at escalate_after."""
        now = now_ms()
        for record in await self.calls.expiring(now):
            if await self.calls.transition(
                record.call_id,
                (PENDING,),
                EXPIRED,
                updated_ms=now,
                decided_by="nobody",
                decided_ms=now,
            ):
                await self._record(record, EXPIRED, "nobody", "expires_after passed")
                await self._finished(record.call_id)
        for record in await self.calls.unreminded(now):
            await self.calls.update(record.call_id, reminded=1)
            policy = self.snapshot().policies.policies.get(record.agent)
            self.spawn(self.notifier.reminded(record, policy))

    async def run_timers(self, interval: float) -> None:
        """tick() every ``interval`` seconds until cancelled."""
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("approval timers failed; trying again")
            await asyncio.sleep(interval)

    async def recover(self, now: int) -> None:
        """At start: writes that began and never finished become outcome_unknown, and a human
        is told; calls approved but not yet started (the broker stopped in between) run now."""
        await self.recover_lost(now)
        for record in await self.calls.in_states((APPROVED,)):
            log.info("call %s was approved before the broker stopped; it runs now", record.call_id)
            self.spawn(self._run(record.call_id))

    async def recover_lost(self, now: int) -> None:
        """Writes that began in a broker process that is gone, and never finished, become
        outcome_unknown, and a human is told."""
        for record in await self.calls.mark_unfinished(now):
            log.error(
                "call %s (%s %s) began in a broker process that stopped, and its outcome "
                "is unknown; it will not run again",
                record.call_id,
                record.agent,
                record.tool,
            )
            self.spawn(self._record(record, UNKNOWN, "broker", "found at start, no outcome"))
            self.spawn(self.notifier.outcome_unknown(record))
            self.events.wake(record.call_id, everywhere=True)

    def alert(self, text: str) -> None:
        """Tell the humans (log, and Slack when configured), without waiting."""
        log.warning("alert: %s", text)
        self.spawn(self.notifier.alert(text))

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` in the background, keeping a reference and logging its failure."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background work failed: %r", task.exception())

    async def close(self) -> None:
        """Let background work (executions, notifications) finish."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def approved_call(record: CallRecord, snapshot: Snapshot) -> Call:
    """A Call rebuilt from a stored one, to run through the execution stages."""
    envelope = pb.Envelope(agent=record.agent)
    envelope.call.CopyFrom(
        pb.CallRequest(
            tool=record.tool,
            arguments_json=record.arguments,
            idempotency_key=record.idempotency_key,
            task_id=record.task_id,
            intent=record.intent,
        )
    )
    key = snapshot.keys.get(record.key_id) or RegisteredKey(record.key_id, record.agent, None, None)
    call = Call("call", pb.SignedRequest(key_id=record.key_id), snapshot, call_id=record.call_id)
    call.verified = Verified(envelope, replace(key, agent=record.agent))
    call.record = record
    return call


def _clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
