"""Checking the audit trail, and pruning it without breaking the check.

``verify`` walks the chain and the checkpoints and names the first bad record: an edited row
changes its hash, a deleted or reordered row breaks the next record's link, and a tail cut
after a checkpoint leaves the checkpoint pointing past the end. Pruning keeps a signed
checkpoint at the cut, so what remains still verifies.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.audit.checkpoints import Checkpoint, Signer
from broker.storage.interfaces import AuditReader
from broker.storage.records import AUDIT_COLUMNS, record_hash

_SEQ = AUDIT_COLUMNS.index("seq")


@dataclass(frozen=True)
class Verdict:
    """What verification found: how many records and checkpoints it checked, and the first
    problem, naming the record."""

    records: int
    checkpoints: int
    problem: str | None
    first_bad_seq: int | None = None

    @property
    def ok(self) -> bool:
        """True when the whole trail checks out."""
        return self.problem is None


async def checkpoints(reader: AuditReader) -> list[Checkpoint]:
    """Every checkpoint, oldest first."""
    return [Checkpoint.of(row) for row in await reader.checkpoints()]


async def verify(
    reader: AuditReader, public_key: Ed25519PublicKey, external: Checkpoint | None = None
) -> Verdict:
    """Check the chain and every checkpoint (and one kept elsewhere, if given); stop at the
    first problem."""
    marks = await checkpoints(reader)
    if external is not None:
        marks.append(external)
    for mark in marks:
        if not mark.valid(public_key):
            return Verdict(
                0,
                0,
                f"the checkpoint at record {mark.seq} has a bad signature "
                "(forged, or signed by another key)",
                mark.seq,
            )
    anchors = [m for m in marks if m.kind == "prune"]
    anchor = max(anchors, key=lambda m: m.seq) if anchors else None
    expected_seq = anchor.seq + 1 if anchor else 1
    expected_prev = anchor.head_hash if anchor else ""
    by_seq = {m.seq: m for m in marks}
    count = 0
    last_seq = expected_seq - 1
    async for row in reader.chain(expected_seq):
        seq = row[_SEQ]
        if seq != expected_seq:
            return Verdict(
                count,
                len(marks),
                f"record {expected_seq} is missing (deleted, or the records were reordered)",
                expected_seq,
            )
        stored_prev, stored_hash = row[-2], row[-1]
        if stored_prev != expected_prev:
            return Verdict(
                count,
                len(marks),
                f"record {seq} does not follow record {seq - 1}: "
                "a record was deleted, inserted or moved",
                seq,
            )
        if record_hash(row[:-1]) != stored_hash:
            return Verdict(count, len(marks), f"record {seq} was changed after it was written", seq)
        signed = by_seq.get(seq)
        if signed is not None and signed.head_hash != stored_hash:
            return Verdict(
                count, len(marks), f"record {seq} is not the one checkpointed there", seq
            )
        count += 1
        last_seq = seq
        expected_seq, expected_prev = seq + 1, stored_hash
    beyond = [m for m in marks if m.seq > last_seq]
    if beyond:
        mark = max(beyond, key=lambda m: m.seq)
        return Verdict(
            count,
            len(marks),
            f"records {last_seq + 1} to {mark.seq} are gone: a "
            f"checkpoint signed the trail at {mark.seq} records (truncated tail)",
            last_seq + 1,
        )
    return Verdict(count, len(marks), None)


async def prune(
    reader: AuditReader, before_ms: int, signer: Signer
) -> tuple[int, Checkpoint | None]:
    """Remove records older than ``before_ms``, leaving a signed checkpoint (an anchor) at the
    last one removed, so the rest still verifies; (records removed, the anchor)."""
    removed, anchor = await reader.prune(before_ms, signer)
    return removed, Checkpoint.of(anchor) if anchor is not None else None
