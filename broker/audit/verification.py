"""Checking the audit trail against every signed head that can be found, and pruning it
without breaking the check.

``verify`` walks the chain and names the first bad record: an edited row changes its hash, a
deleted or reordered row breaks the next record's link. Then it holds the chain against every
signed checkpoint it is given, each with the place it was found (audit.db, broker.db, a
witness, a file): a checkpoint past the chain's end means the tail was cut; one whose head is
not the chain's record at that seq means the trail was rewritten or replaced; one whose
signature fails was forged. Pruning keeps a signed checkpoint at the cut (an anchor), so what
remains still verifies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.audit.checkpoints import Checkpoint, Signer
from broker.storage.interfaces import AuditReader
from broker.storage.records import AUDIT_COLUMNS, CheckpointRow, record_hash

_SEQ = AUDIT_COLUMNS.index("seq")
TRAIL = "audit.db"  # where the trail's own checkpoints are found


class Chain(Protocol):
    """A trail to check: audit.db (an AuditReader) or an exported one."""

    def chain(self, from_seq: int) -> AsyncIterator[tuple[Any, ...]]:
        """Every record from ``from_seq`` on, in chain order."""

    async def checkpoints(self) -> list[CheckpointRow]:
        """The trail's own checkpoints, oldest first."""


@dataclass(frozen=True)
class Held:
    """A signed checkpoint, and the place it was found."""

    mark: Checkpoint
    place: str


@dataclass(frozen=True)
class Verdict:
    """What verification found: how many records and checkpoints it checked, the first
    problem (naming the record, the checkpoint and where it was found), and the newest head
    each place holds."""

    records: int
    checkpoints: int
    problem: str | None
    first_bad_seq: int | None = None
    latest: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the whole trail checks out."""
        return self.problem is None


async def checkpoints(reader: AuditReader) -> list[Checkpoint]:
    """Every checkpoint, oldest first."""
    return [Checkpoint.of(row) for row in await reader.checkpoints()]


async def verify(
    trail: Chain,
    public_key: Ed25519PublicKey,
    elsewhere: Sequence[Held] = (),
    broker_id: str = "",
    trail_name: str = TRAIL,
    made_ms: int | None = None,
) -> Verdict:
    """Check the chain, its own checkpoints and those found ``elsewhere`` (only those of
    ``broker_id`` when given); stop at the first problem. ``made_ms``: the trail is a copy made
    then, and checkpoints signed later may lie past its end."""
    own = [Held(Checkpoint.of(row), trail_name) for row in await trail.checkpoints()]
    held = own + [h for h in elsewhere if _ours(h.mark, broker_id)]
    latest: dict[str, int] = {}
    for found in held:
        latest[found.place] = max(latest.get(found.place, 0), found.mark.seq)
        if not found.mark.valid(public_key):
            return Verdict(
                0,
                0,
                f"{found.mark.describe()} found in {found.place} has a bad signature (forged, "
                "or signed by another key: the trail was re-signed or replaced)",
                found.mark.seq,
                latest,
            )
    anchors = [h.mark for h in own if h.mark.kind == "prune"]
    anchor = max(anchors, key=lambda m: m.seq) if anchors else None
    expected_seq = anchor.seq + 1 if anchor else 1
    expected_prev = anchor.head_hash if anchor else ""
    by_seq: dict[int, list[Held]] = {}
    for found in held:
        by_seq.setdefault(found.mark.seq, []).append(found)
    if anchor is not None:  # what a witness signed at the cut must be the anchor's head
        other = [h for h in by_seq.get(anchor.seq, []) if h.mark.head_hash != anchor.head_hash]
        if other:
            return _forked(0, len(held), anchor.seq, other, latest)
    count = 0
    last_seq = expected_seq - 1
    async for row in trail.chain(expected_seq):
        seq = row[_SEQ]
        if seq != expected_seq:
            return Verdict(
                count,
                len(held),
                f"record {expected_seq} is missing (deleted, or the records were reordered)",
                expected_seq,
                latest,
            )
        stored_prev, stored_hash = row[-2], row[-1]
        if stored_prev != expected_prev:
            return Verdict(
                count,
                len(held),
                f"record {seq} does not follow record {seq - 1}: "
                "a record was deleted, inserted or moved",
                seq,
                latest,
            )
        if record_hash(row[:-1]) != stored_hash:
            return Verdict(
                count, len(held), f"record {seq} was changed after it was written", seq, latest
            )
        other = [h for h in by_seq.get(seq, []) if h.mark.head_hash != stored_hash]
        if other:
            return _forked(count, len(held), seq, other, latest)
        count += 1
        last_seq = seq
        expected_seq, expected_prev = seq + 1, stored_hash
    beyond = [
        h for h in held if h.mark.seq > last_seq and (made_ms is None or h.mark.ts_ms <= made_ms)
    ]
    if beyond:
        top = max(h.mark.seq for h in beyond)
        tops = [h for h in beyond if h.mark.seq == top]
        return Verdict(
            count,
            len(held),
            f"the trail was cut: it ends at record {last_seq}, but {tops[0].mark.describe()} "
            f"found in {_places(tops)} signed it at {top} records: records "
            f"{last_seq + 1} to {top} are gone (truncated tail)",
            last_seq + 1,
            latest,
        )
    return Verdict(count, len(held), None, latest=latest)


def _ours(mark: Checkpoint, broker_id: str) -> bool:
    return not broker_id or not mark.broker_id or mark.broker_id == broker_id


def _forked(count: int, marks: int, seq: int, found: list[Held], latest: dict[str, int]) -> Verdict:
    return Verdict(
        count,
        marks,
        f"record {seq} is not the one {found[0].mark.describe()} found in {_places(found)} "
        "signed: the trail was rewritten or replaced from there back",
        seq,
        latest,
    )


def _places(found: list[Held]) -> str:
    """``broker.db and http://...``: every place, once, in the order found."""
    places = list(dict.fromkeys(h.place for h in found))
    return places[0] if len(places) == 1 else ", ".join(places[:-1]) + " and " + places[-1]


def unheld(trail_marks: Sequence[Checkpoint], held: Sequence[Held], place: str) -> list[int]:
    """The seqs of the trail's checkpoints signed after the newest one ``place`` holds:
    those it has not taken (it is down, or was added since)."""
    newest = max((h.mark.seq for h in held if h.place == place), default=0)
    return [m.seq for m in trail_marks if m.seq > newest and m.kind != "prune"]


async def prune(
    reader: AuditReader, before_ms: int, signer: Signer
) -> tuple[int, Checkpoint | None]:
    """Remove records older than ``before_ms``, leaving a signed checkpoint (an anchor) at the
    last one removed, so the rest still verifies; (records removed, the anchor)."""
    removed, anchor = await reader.prune(before_ms, signer)
    return removed, Checkpoint.of(anchor) if anchor is not None else None
