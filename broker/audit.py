"""The audit trail's tamper evidence: the broker's audit key, signed checkpoints, verification
and pruning.

Every record carries the hash of the one before (the audit writer makes the chain); every 1,000
records or ``audit_checkpoint_interval`` a checkpoint (the chain's length and head hash) is
signed with the broker's own Ed25519 audit key. ``verify`` walks the chain and the checkpoints
and names the first bad record: an edited row changes its hash, a deleted or reordered row
breaks the next record's link, and a tail cut after a checkpoint leaves the checkpoint pointing
past the end. Pruning keeps a signed checkpoint at the cut, so what remains still verifies.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.identity import AgentCredentials
from broker.store import (
    AUDIT_COLUMNS,
    audit_chain,
    audit_checkpoint_rows,
    prune_audit,
    record_hash,
)

AUDIT_AGENT = "broker-audit"


def audit_key_path(data_dir: Path) -> Path:
    """The broker's audit signing key (made on first start, mode 0600)."""
    return data_dir / "audit.key"


def audit_key(data_dir: Path) -> AgentCredentials:
    """The audit key, made if missing."""
    path = audit_key_path(data_dir)
    if not path.exists():
        AgentCredentials.generate(AUDIT_AGENT).save(path)
    return AgentCredentials.load(path)


def checkpoint_message(seq: int, head_hash: str, ts_ms: int) -> bytes:
    """The exact bytes a checkpoint signs."""
    return f"toolbroker audit checkpoint v1\n{seq}\n{head_hash}\n{ts_ms}".encode()


class Signer:
    """Signs checkpoints with the audit key (the store calls it inside its transaction)."""

    def __init__(self, credentials: AgentCredentials) -> None:
        self._credentials = credentials

    def __call__(self, seq: int, head_hash: str, ts_ms: int) -> tuple[str, str]:
        signature = self._credentials.private_key.sign(checkpoint_message(seq, head_hash, ts_ms))
        return self._credentials.key_id, base64.b64encode(signature).decode()

    @property
    def public_key_b64(self) -> str:
        """The public half, for keeping elsewhere with the checkpoints."""
        return self._credentials.public_key_b64


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement: the chain had ``seq`` records and ended in ``head_hash``."""

    seq: int
    head_hash: str
    ts_ms: int
    kind: str  # periodic; stop (the broker stopped); prune (the anchor left at a cut)
    key_id: str
    signature: str

    def valid(self, public_key: Ed25519PublicKey) -> bool:
        """True when the signature holds."""
        try:
            public_key.verify(
                base64.b64decode(self.signature),
                checkpoint_message(self.seq, self.head_hash, self.ts_ms),
            )
        except (InvalidSignature, ValueError):
            return False
        return True


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


def checkpoints(database: Path) -> list[Checkpoint]:
    """Every checkpoint, oldest first."""
    return [Checkpoint(*row) for row in audit_checkpoint_rows(database)]


def verify(
    database: Path, public_key: Ed25519PublicKey, external: Checkpoint | None = None
) -> Verdict:
    """Check the chain and every checkpoint (and one kept elsewhere, if given); stop at the
    first problem."""
    marks = checkpoints(database)
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
    for row in audit_chain(database, expected_seq):
        seq = row[AUDIT_COLUMNS.index("seq")]
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


def prune(database: Path, before_ms: int, signer: Signer) -> tuple[int, Checkpoint | None]:
    """Remove records older than ``before_ms``, leaving a signed checkpoint (an anchor) at the
    last one removed, so the rest still verifies; (records removed, the anchor)."""
    removed, anchor = prune_audit(database, before_ms, signer)
    if anchor is None:
        return removed, None
    seq, head, ts_ms, key_id, signature = anchor
    return removed, Checkpoint(seq, head, ts_ms, "prune", key_id, signature)
