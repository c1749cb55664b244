"""The broker's audit key and the checkpoints it signs.

Every 1,000 records, every ``audit_checkpoint_interval`` and when the broker stops, the audit
writer signs the chain's length and head hash with the broker's own Ed25519 audit key (made on
first start, ``data_dir/audit.key``). A checkpoint kept elsewhere later proves how long the
chain was and how it ended.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.signing import AgentCredentials
from broker.storage.records import CheckpointRow

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
    """Signs checkpoints with the audit key: ``signer(seq, head_hash, ts_ms)`` gives (key id,
    signature)."""

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

    @classmethod
    def of(cls, row: CheckpointRow) -> Checkpoint:
        """The checkpoint a stored row holds."""
        return cls(row.seq, row.head_hash, row.ts_ms, row.kind, row.key_id, row.signature)

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
