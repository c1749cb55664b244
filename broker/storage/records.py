"""What the broker keeps, as plain records: the same for every backend.

A backend stores these and hands them back; nothing here knows SQL. ``record_hash`` is the
audit chain's format: the canonical encoding every backend hashes, and ``broker audit verify``
checks, whatever database holds the records.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple


class StoreError(Exception):
    """The database could not do what was asked (locked, read-only, full, corrupt, missing)."""


@dataclass(frozen=True)
class CallRecord:
    """A call that outlives its request: a write (intent, then outcome) or a call that waits
    for a human. ``arguments`` is canonical JSON; ``digest`` binds what will execute."""

    call_id: str
    agent: str
    key_id: str
    tool: str
    task_id: str
    intent: str
    arguments: str
    digest: str
    idempotency_key: str
    state: str
    why: str
    created_ms: int
    updated_ms: int
    escalate_at_ms: int = 0
    expires_at_ms: int = 0
    reminded: int = 0
    decided_by: str = ""
    decided_ms: int = 0
    note: str = ""
    outcome: str = ""
    slack: str = ""


CALL_COLUMNS: tuple[str, ...] = tuple(CallRecord.__dataclass_fields__)
# What a transition or an update may change: the bookkeeping, never what the call is (its
# state changes only by a transition).
CALL_CHANGES = frozenset(
    {
        "updated_ms",
        "escalate_at_ms",
        "expires_at_ms",
        "reminded",
        "decided_by",
        "decided_ms",
        "note",
        "outcome",
        "slack",
    }
)


def check_changes(changes: Mapping[str, object]) -> None:
    """ValueError when a change names a column that does not exist or may not change."""
    for name in changes:
        if name not in CALL_CHANGES:
            raise ValueError(f"a stored call's {name} cannot be changed")


class AuditRow(NamedTuple):
    """One audit record as stored: a tuple in the table's column order, because one is built
    for every step of every request and sent to the audit writer as it is."""

    ts_ms: int
    call_id: str
    rpc: str
    agent: str
    key_id: str
    nonce: str  # accepted nonces only: the replay guard reloads them after a restart
    tool: str
    task_id: str
    intent: str
    args_digest: str
    decision: str
    reason: str
    upstream_status: int | None
    latency_us: int
    policy_hash: str
    detail: str
    arguments: str = ""  # as sent (at most 64 KiB; longer ones are left out, the digest stays)
    event: str = ""  # the step: decided, executed, refused, pending, approved, denied, ...
    cost: int = 0  # cost units the call spent
    result_digest: str = ""  # SHA-256 of the redacted result_json
    result_size: int = 0  # its length in bytes
    seq: int = 0  # given by the audit writer: the position in the chain
    prev_hash: str = ""  # given by the audit writer: the hash of the record before
    hash: str = ""  # given by the audit writer: SHA-256 over this record, prev_hash included


AUDIT_COLUMNS: tuple[str, ...] = AuditRow._fields  # what record_hash covers, hash last
CHAINED = len(AUDIT_COLUMNS) - 3  # the broker supplies all but seq, prev_hash and hash
# Records of a step on a call's way (it arrived; it was decided to run it), not its outcome:
# one call's verdict is its final record, so counting and re-deciding leave these out.
STEP_EVENTS = ("received", "decided")
# The columns an audit query may filter on, with an exact value.
AUDIT_FILTERS = ("agent", "tool", "task_id", "decision", "reason", "event", "call_id", "rpc")

_CANONICAL = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # made once: cheaper


def record_hash(values: Sequence[Any]) -> str:
    """SHA-256 (hex) over a record's canonical encoding: every column but ``hash`` itself, in
    the table's order (seq and prev_hash included), as compact JSON."""
    return hashlib.sha256(_CANONICAL.encode(list(values)).encode()).hexdigest()


@dataclass(frozen=True)
class CheckpointRow:
    """A signed statement kept with the chain: it had ``seq`` records ending in ``head_hash``.
    ``kind``: periodic, stop (the broker stopped), prune (the anchor left at a cut).
    ``broker_id`` is empty for checkpoints signed before it was part of the signed text."""

    seq: int
    head_hash: str
    ts_ms: int
    kind: str
    key_id: str
    signature: str
    broker_id: str = ""


CHECKPOINT_COLUMNS = ("seq", "head_hash", "ts_ms", "kind", "key_id", "signature", "broker_id")


@dataclass(frozen=True)
class AuditQuery:
    """Which audit records to read: exact values of AUDIT_FILTERS columns, a time range, the
    records after ``after_seq`` (and before ``before_seq``, to page back); all of them in
    chain order, or the newest ``limit``."""

    equals: Mapping[str, str] = field(default_factory=dict)
    since_ms: int | None = None
    until_ms: int | None = None
    after_seq: int = 0
    before_seq: int | None = None
    limit: int | None = None
    newest: bool = False

    def __post_init__(self) -> None:
        for column in self.equals:
            if column not in AUDIT_FILTERS:
                raise ValueError(f"cannot filter audit records on {column}")


class Attempt(NamedTuple):
    """A call as the loop detector remembers it (from its final audit record)."""

    ts_ms: int
    agent: str
    tool: str
    args_digest: str
    decision: str
    reason: str


@dataclass(frozen=True)
class Freeze:
    """A kill switch in force: ``agent`` (``*`` for every agent), why, who, when."""

    agent: str
    reason: str
    by: str
    ts_ms: int


@dataclass(frozen=True)
class Usage:
    """What a budget has spent so far, and the highest alert level already sent (percent)."""

    calls: int = 0
    cost: int = 0
    alerted: int = 0


@dataclass(frozen=True)
class Charge:
    """One budget a call spends from, as a shared store checks it: its key and its limits."""

    scope: str
    period: str
    calls: int | None  # at most this many calls (None: no limit)
    cost: int | None  # at most this many cost units


# (the charge, its use after spending) -> the alert level (percent) that use has reached
AlertLevel = Callable[[Charge, Usage], int]


@dataclass(frozen=True)
class Spent:
    """What an atomic charge did: ``refused`` is the index of the first charge that would have
    gone over its limit (nothing was spent), with ``usages`` as they stood; else None, with
    ``usages`` after spending and each one's alert level (raised: its alert is this process's
    to send)."""

    refused: int | None
    usages: list[Usage]
    raised: list[bool]


@dataclass(frozen=True)
class TaintRow:
    """A value that came from outside in an agent's task, and where it was seen."""

    kind: str
    value: str
    origin: str


@dataclass(frozen=True)
class SecretRow:
    """One stored secret: its name, the encrypted value and when it was made, changed, used."""

    name: str
    nonce: bytes
    ciphertext: bytes
    created_ms: int
    updated_ms: int
    last_used_ms: int | None


# where outside text came from: a tool's untrusted answer; a trusted tool's answer; the agent's
# own words (its arguments and intents), which vouch only for what they said first
Source = Literal["untrusted", "trusted", "own"]
SEPARATOR = "\x00"  # between the strings of a segment's text: never a letter or a digit


@dataclass(frozen=True)
class TextSegment:
    """The compact text of one answer (or one call's own words), with where each of its
    strings starts (``marks``: offset, JSON path) and what it is. ``id`` orders segments as
    they were stored (0 until stored)."""

    source: Source
    origin: str  # "mail.get_message (call 0f3a...)"
    text: str
    marks: tuple[tuple[int, str], ...]
    task_id: str = ""
    at_ms: int = 0
    id: int = 0

    @property
    def letters(self) -> int:
        """How many letters and digits it holds (its text less the separators)."""
        return len(self.text) - self.text.count(SEPARATOR)

    def path_at(self, offset: int) -> str:
        """The JSON path of the string holding character ``offset``."""
        index = bisect_right(self.marks, (offset, "\uffff")) - 1
        return self.marks[max(index, 0)][1] if self.marks else "$"
