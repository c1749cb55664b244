"""The storage seam: what the broker asks of a database, as typed async interfaces.

The broker never passes SQL around; it calls these. ``sqlite_state`` and ``sqlite_audit``
implement them on the embedded SQLite files (the default); ``pg_state`` and ``pg_audit`` on a
PostgreSQL database that replicas share. Each implements the same methods with the same meaning
(the contract each docstring states), and the broker does not change.

Reads are ``async`` and never run on the event loop's thread. A few writes are *queued*
(plain ``def``): budget use, taint, a secret's last use. Nobody waits for them, but they are
committed before the next audit record is (``StateStore.settle``), so before the answer of the
call that made them leaves; except taint and outside text, which a read's answer does not wait
for: the ``confirm`` stage settles the store (on disk) before it decides a write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from broker.storage.records import (
    AlertLevel,
    Attempt,
    AuditQuery,
    AuditRow,
    CallRecord,
    Charge,
    CheckpointRow,
    Freeze,
    SecretRow,
    Source,
    Spent,
    TaintRow,
    TextSegment,
    Usage,
)

# (seq, head hash, ts_ms, kind) -> the checkpoint, signed: how storage gets an anchor signed
Sign = Callable[[int, str, int, str], CheckpointRow]


class CallStore(Protocol):
    """Calls that outlive their request: writes (intent, then outcome) and pending calls."""

    async def insert(self, record: CallRecord) -> bool:
        """Store a new call; False when (agent, idempotency_key) is already taken."""

    async def get(self, call_id: str) -> CallRecord | None:
        """One call by id."""

    async def find(self, agent: str, idempotency_key: str) -> CallRecord | None:
        """The call an agent made with this idempotency key."""

    async def transition(
        self, call_id: str, from_states: Sequence[str], to_state: str, **changes: object
    ) -> bool:
        """Compare-and-set: move a call to ``to_state`` (and set ``changes``) only if it is in
        one of ``from_states``; False when another decision came first. Exactly one of any
        number of concurrent transitions from the same state succeeds."""

    async def update(self, call_id: str, **changes: object) -> None:
        """Set fields of a call whatever its state (bookkeeping: Slack message, reminders)."""

    async def in_states(
        self, states: Sequence[str], *, agent: str | None = None, updated_since_ms: int = 0
    ) -> list[CallRecord]:
        """Calls in one of ``states`` (of ``agent`` only, if given), plus, with
        ``updated_since_ms``, every call updated since then; oldest first."""

    async def expiring(self, now_ms: int) -> list[CallRecord]:
        """Pending calls whose expiry has come."""

    async def unreminded(self, now_ms: int) -> list[CallRecord]:
        """Pending calls past their escalation time whose reminder has not been sent."""

    async def count(self, state: str | None = None) -> int:
        """How many calls are in ``state`` (or stored at all)."""

    async def mark_unfinished(self, now_ms: int) -> list[CallRecord]:
        """At start (and, on a shared state, while running): writes that began
        (``executing``) in a process that is gone and never recorded an outcome become
        ``outcome_unknown``; returns them. They are never executed again."""

    async def prune(self, before_ms: int) -> int:
        """Drop calls in a final state last changed before ``before_ms`` (a retried
        idempotency key older than that runs anew); how many. Pending, approved, executing
        calls are never dropped, nor outcome_unknown ones before a human reconciled them."""


class FreezeStore(Protocol):
    """The kill switches in force."""

    async def all(self) -> dict[str, Freeze]:
        """agent (or ``*``) -> its freeze."""

    async def set(self, freeze: Freeze) -> None:
        """Freeze an agent (replacing an earlier freeze of it); durable when this returns."""

    async def clear(self, agent: str) -> bool:
        """Lift a freeze; False when there was none."""


class BudgetStore(Protocol):
    """Budget use per scope and period."""

    async def usage(self, scope: str, period: str) -> Usage:
        """What has been spent of a budget so far."""

    def add_usage(self, scope: str, period: str, usage: Usage) -> None:
        """Queued: add ``usage`` (calls and cost; the alert level is the highest seen)."""

    async def prune(self, before_day: str, idle_before_ms: int) -> int:
        """Drop the use of days before ``before_day`` (YYYY-MM-DD) and of tasks idle since
        before ``idle_before_ms``; how many budgets."""


class TaintStore(Protocol):
    """Values that came from outside, per agent and task."""

    async def values(self, agent: str, task_id: str, since_ms: int) -> list[TaintRow]:
        """Every outside value seen in this agent's task, and in its other tasks since
        ``since_ms``."""

    def add(self, agent: str, task_id: str, rows: Sequence[TaintRow], now_ms: int) -> None:
        """Queued: remember outside values for the task (each kind and value once). The
        call's answer does not wait for them: whoever decides a write settles the store first
        (see ``StateStore.settle``)."""

    def add_text(self, agent: str, segment: TextSegment) -> None:
        """Queued: keep a segment of outside text or of words that vouch for values. The
        call's answer does not wait for it: whoever decides a write settles the store first
        (see ``StateStore.settle``)."""

    def prune_text(self, agent: str, source: Source, keep_chars: int) -> None:
        """Queued: drop the agent's oldest text of ``source`` beyond ``keep_chars``."""

    async def text_chars(self, agent: str, source: Source) -> int:
        """How many characters of the agent's text of ``source`` are kept."""

    async def text_ids(self, agent: str, task_id: str, since_ms: int) -> list[tuple[int, str]]:
        """(id, source), oldest first, of the task's segments and of the agent's untrusted
        segments since ``since_ms`` in any task."""

    async def texts(self, ids: Sequence[int]) -> list[TextSegment]:
        """The segments with these ids that are still kept, oldest first."""

    async def prune(self, before_ms: int) -> int:
        """Drop outside values and text seen before ``before_ms``; how many rows."""


class SecretStore(Protocol):
    """Encrypted secrets (the store never sees a plaintext value)."""

    async def version(self) -> int:
        """A number that changes whenever the secrets may have changed, also from another
        process (the ``broker secrets`` command): cached values reload when it does."""

    async def rows(self) -> list[SecretRow]:
        """Every secret, by name."""

    async def put(
        self, name: str, nonce: bytes, ciphertext: bytes, now_ms: int, *, replace: bool
    ) -> bool:
        """Store a new secret (``replace`` False) or a new value for an existing one (True);
        False when the name was not in the state that asks for."""

    async def delete(self, name: str) -> bool:
        """Remove a secret; False when there was none."""

    def used(self, name: str, now_ms: int) -> None:
        """Queued: note when a secret was last used."""


class SharedBudgetStore(Protocol):
    """Budgets several processes spend from at once (a shared state only)."""

    async def spend(self, charges: Sequence[Charge], cost: int, level: AlertLevel) -> Spent:
        """One call and ``cost`` units from every budget in ``charges``, checked against
        what every process has spent, atomically: from all of them or from none."""


class NonceStore(Protocol):
    """Request nonces claimed where every replica sees them (a shared state only)."""

    async def claim(self, nonce: str, expires_ms: int) -> bool:
        """True when no process had claimed ``nonce`` yet; committed before it returns."""

    async def prune(self, now_ms: int) -> int:
        """Drop the nonces stale at ``now_ms``; how many."""


class AuditHeadStore(Protocol):
    """The audit chain's signed checkpoints, kept beside the state as well as in the trail:
    deleting the trail does not delete them."""

    async def all(self) -> list[CheckpointRow]:
        """Every head kept, oldest first."""

    async def add(self, row: CheckpointRow) -> None:
        """Keep a signed checkpoint."""


class CheckpointKeeper(Protocol):
    """How the audit writer process keeps each checkpoint with the state (a connection of its
    own, used from its thread)."""

    def add(self, row: CheckpointRow) -> None:
        """Keep a signed checkpoint; StoreError if the state's database cannot take it."""

    def close(self) -> None:
        """Let go of the database."""


# The head of the audit chain: seq, hash, records since the last checkpoint, and its time (ms).
ChainHead = tuple[int, str, int, int]


class TrailLedger(Protocol):
    """How the audit writer process writes the trail (synchronously: it has no event loop).
    Where several writers share one chain (replicas on PostgreSQL), each transaction yields
    the head it locked; where one writer owns the chain (SQLite), it yields None and the
    writer's own memory of the head is right."""

    def head(self) -> tuple[tuple[int, str] | None, CheckpointRow | None]:
        """(seq, hash) of the last record, and the last checkpoint."""

    def transaction(self) -> AbstractContextManager[ChainHead | None]:
        """One write transaction, rolled back (StoreError) if any of it fails."""

    def keep_head(self, head: ChainHead) -> None:
        """Store the head as the transaction leaves it (shared chains only)."""

    def commit_durably(self, durable: bool) -> None:
        """Inside a transaction: whether its commit must wait for the disk (a batch that
        asked for it, or a checkpoint). SQLite fsyncs apart (``sync``)."""

    def storable(self, values: Sequence[Any]) -> Sequence[Any]:
        """A record's values as the database stores them exactly, before they are hashed."""

    def insert(self, rows: Sequence[Sequence[Any]]) -> None:
        """Chained records (every column, hash last), inside a transaction."""

    def insert_checkpoint(self, mark: CheckpointRow) -> None:
        """A signed checkpoint, inside a transaction."""

    def sync(self) -> None:
        """Make what is committed durable; StoreError if that fails."""

    def copy_log(self) -> None:
        """Housekeeping between commits (a failure is logged, not raised)."""

    def close(self) -> None:
        """Let go of the database."""


class StateStore(Protocol):
    """The broker's own state (not the audit trail): one database, one backend."""

    @property
    def calls(self) -> CallStore:
        """Stored calls."""

    @property
    def freezes(self) -> FreezeStore:
        """Kill switches."""

    @property
    def budgets(self) -> BudgetStore:
        """Budget use."""

    @property
    def taint(self) -> TaintStore:
        """Outside values per task."""

    @property
    def secrets(self) -> SecretStore:
        """Encrypted secrets."""

    @property
    def heads(self) -> AuditHeadStore:
        """The audit chain's signed heads."""

    async def open(self) -> None:
        """Connect (creating and migrating the schema if needed); StoreError if it cannot."""

    async def close(self) -> None:
        """Let queued writes commit, then disconnect."""

    @property
    def shared_budgets(self) -> SharedBudgetStore | None:
        """Budgets charged atomically across processes; None where one process holds the
        state (its in-memory counters are exact)."""

    @property
    def nonces(self) -> NonceStore | None:
        """Nonces claimed across processes; None where one process holds the state (its
        replay guard's memory, reloaded from the trail, is enough)."""

    @property
    def shared(self) -> bool:
        """True when other broker processes share this state (replicas): writes left
        executing are looked for while running, not only at start."""

    def watch(self, handler: Callable[[str, str], None]) -> None:
        """From now on, tell ``handler(topic, key)`` what other processes sharing this state
        changed: ``freezes``; ``call`` (its id), a stored call moved on; ``resync``, when
        changes may have been missed (re-read everything). SQLite state belongs to one
        process (the data directory's lock): it never calls."""

    def announce(self, topic: str, key: str = "") -> None:
        """Tell the other processes ``topic:key`` (best effort, not awaited: a listener that
        misses it re-reads at its own timeout). SQLite: nothing to tell."""

    def settle(self, *, durable: bool, lazy: bool = False) -> Awaitable[None] | None:
        """None when no queued write is outstanding; else an awaitable done once they are
        committed (and, with ``durable``, on disk). Lazy writes (taint, outside text) count
        only with ``lazy``: the answer of the read that made them does not wait for them,
        the decision of a write does."""


class AuditReader(Protocol):
    """The audit trail, read (and pruned) by the broker at start and by the command line."""

    async def prepare(self) -> None:
        """Create the trail's schema, or bring it up to date (the broker does this at start,
        before its audit writer opens the trail); StoreError if it cannot."""

    async def present(self) -> bool:
        """Whether the trail exists at all (its file, its tables): a command says "has the
        broker run?" rather than make an empty one."""

    async def query(self, query: AuditQuery) -> list[AuditRow]:
        """Records matching ``query``, in chain order."""

    def chain(self, from_seq: int) -> AsyncIterator[tuple[Any, ...]]:
        """Every record from ``from_seq`` on (all columns, hash last), in chain order,
        streamed: a verify of millions of records holds few at a time."""

    async def checkpoints(self) -> list[CheckpointRow]:
        """Every signed checkpoint, oldest first."""

    async def recent_nonces(self, since_ms: int) -> dict[str, int]:
        """Accepted nonces recorded at or after ``since_ms``, with when they were recorded."""

    async def attempts(self, since_ms: int) -> list[Attempt]:
        """The final records of calls since ``since_ms``: the loop detector's memory."""

    async def close(self) -> None:
        """Let go of the database."""

    async def prune(self, before_ms: int, sign: Sign) -> tuple[int, CheckpointRow | None]:
        """Delete the records older than ``before_ms`` and the checkpoints before the cut, in
        one transaction that leaves a signed ``prune`` checkpoint (an anchor) at the last
        record removed; (records removed, the anchor)."""
