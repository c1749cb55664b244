"""The broker's audit key and the checkpoints it signs.

Every 1,000 records, every ``audit_checkpoint_interval`` and when the broker stops, the audit
writer signs the chain's length and head hash with the broker's own Ed25519 audit key (made on
first start, ``data_dir/audit.key``). A checkpoint kept elsewhere later proves how long the
chain was and how it ended: anyone holding the public key (``broker audit key``) can check one
without the broker. The signed text is ``checkpoint_message``; docs/audit.md spells it out.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.signing import AgentCredentials
from broker.storage.records import CheckpointRow

AUDIT_AGENT = "broker-audit"
KINDS = ("periodic", "stop", "prune")


class KeyPlaces(Protocol):
    """Where the audit key is (BrokerSettings has both; the audit writer process, which
    imports this module, never loads the settings' models)."""

    @property
    def data_dir(self) -> Path:
        """The data directory."""

    @property
    def audit_key_file(self) -> Path | None:
        """The configured key file, if any."""


def audit_key_path(settings: KeyPlaces) -> Path:
    """The broker's audit signing key (made on first start, mode 0600): ``audit_key_file``,
    the same for every replica, or the data directory's own."""
    return settings.audit_key_file or settings.data_dir / "audit.key"


def audit_key(settings: KeyPlaces) -> AgentCredentials:
    """The audit key, made if missing."""
    path = audit_key_path(settings)
    if not path.exists():
        AgentCredentials.generate(AUDIT_AGENT).save(path)
    return AgentCredentials.load(path)


def checkpoint_message(broker_id: str, seq: int, head_hash: str, ts_ms: int, kind: str) -> bytes:
    """The exact bytes a checkpoint signs. Version 2 names the broker and the kind, so a
    checkpoint can be moved neither to another broker's trail nor from a periodic one to a
    prune anchor (where verification may start). Version 1 (checkpoints signed before, with
    no broker id) signed only the seq, the head and the time."""
    if not broker_id:
        return f"toolbroker audit checkpoint v1\n{seq}\n{head_hash}\n{ts_ms}".encode()
    return (
        f"toolbroker audit checkpoint v2\n{broker_id}\n{seq}\n{head_hash}\n{ts_ms}\n{kind}"
    ).encode()


class Signer:
    """Signs checkpoints of one broker's chain with the audit key: ``signer(seq, head_hash,
    ts_ms, kind)`` gives the signed CheckpointRow."""

    def __init__(self, credentials: AgentCredentials, broker_id: str) -> None:
        if not broker_id:
            raise ValueError("a checkpoint names its broker: broker_id is empty")
        self._credentials = credentials
        self.broker_id = broker_id

    def __call__(self, seq: int, head_hash: str, ts_ms: int, kind: str) -> CheckpointRow:
        message = checkpoint_message(self.broker_id, seq, head_hash, ts_ms, kind)
        signature = base64.b64encode(self._credentials.private_key.sign(message)).decode()
        return CheckpointRow(
            seq, head_hash, ts_ms, kind, self._credentials.key_id, signature, self.broker_id
        )

    @property
    def public_key_b64(self) -> str:
        """The public half, for keeping elsewhere with the checkpoints."""
        return self._credentials.public_key_b64


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement: the broker's chain had ``seq`` records and ended in ``head_hash``."""

    seq: int
    head_hash: str
    ts_ms: int
    kind: str  # periodic; stop (the broker stopped); prune (the anchor left at a cut)
    key_id: str
    signature: str
    broker_id: str = ""

    @classmethod
    def of(cls, row: CheckpointRow) -> Checkpoint:
        """The checkpoint a stored row holds."""
        return cls(
            row.seq, row.head_hash, row.ts_ms, row.kind, row.key_id, row.signature, row.broker_id
        )

    def row(self) -> CheckpointRow:
        """The checkpoint as storage keeps it."""
        return CheckpointRow(
            self.seq,
            self.head_hash,
            self.ts_ms,
            self.kind,
            self.key_id,
            self.signature,
            self.broker_id,
        )

    @classmethod
    def from_json(cls, data: Any) -> Checkpoint:
        """A checkpoint as published (``to_json``); ValueError naming what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("a checkpoint is a JSON object")
        try:
            mark = cls(
                int(data["seq"]),
                str(data["head_hash"]),
                int(data["ts_ms"]),
                str(data.get("kind", "periodic")),
                str(data["key_id"]),
                str(data["signature"]),
                str(data.get("broker_id", "")),
            )
        except KeyError as exc:
            raise ValueError(f"a checkpoint needs {exc.args[0]!r}") from None
        except (TypeError, ValueError):
            raise ValueError("seq and ts_ms of a checkpoint are whole numbers") from None
        if mark.seq < 1 or mark.kind not in KINDS:
            raise ValueError(f"not a checkpoint: seq {mark.seq}, kind {mark.kind!r}")
        return mark

    def to_json(self) -> dict[str, Any]:
        """What a witness keeps: everything a third party needs to check it with the public
        key alone, and the time in words."""
        return {"event": "audit_checkpoint", **asdict(self), "time": iso_time(self.ts_ms)}

    def line(self) -> str:
        """``to_json`` as one compact line."""
        return json.dumps(self.to_json(), separators=(",", ":"))

    def valid(self, public_key: Ed25519PublicKey) -> bool:
        """True when the signature holds."""
        try:
            public_key.verify(
                base64.b64decode(self.signature, validate=True),
                checkpoint_message(self.broker_id, self.seq, self.head_hash, self.ts_ms, self.kind),
            )
        except (InvalidSignature, ValueError, binascii.Error):
            return False
        return True

    def describe(self) -> str:
        """``the stop checkpoint at record 48 (2026-12-04T14:57:41.464Z)``."""
        return f"the {self.kind} checkpoint at record {self.seq} ({iso_time(self.ts_ms)})"


def iso_time(ms: int) -> str:
    """A time in milliseconds, as UTC ISO 8601 with milliseconds."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class PublishedKey:
    """The audit public key as ``broker audit key`` prints it: what an auditor needs, and all
    of it, to check checkpoints (and so a trail) without the broker."""

    broker_id: str
    key_id: str
    public_key: str  # base64 of the 32-byte Ed25519 public key

    @classmethod
    def of(cls, credentials: AgentCredentials, broker_id: str) -> PublishedKey:
        """The public half of the audit key."""
        return cls(broker_id, credentials.key_id, credentials.public_key_b64)

    @classmethod
    def read(cls, path: Path) -> PublishedKey:
        """From a file: the JSON ``broker audit key`` printed, or the base64 key alone;
        ValueError naming what is wrong."""
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"cannot read it: {exc.strerror}") from None
        if text.startswith("{"):
            try:
                data = json.loads(text)
                found = cls(str(data.get("broker_id", "")), str(data["key_id"]), data["public_key"])
            except (ValueError, KeyError, TypeError):
                raise ValueError("not the JSON `broker audit key` prints") from None
        else:
            found = cls("", "", text)
        found.key()  # fails here, with the reason, rather than at the first checkpoint
        return found

    def key(self) -> Ed25519PublicKey:
        """The key itself; ValueError if it is not 32 bytes of base64."""
        try:
            raw = base64.b64decode(self.public_key, validate=True)
            return Ed25519PublicKey.from_public_bytes(raw)
        except (ValueError, TypeError, binascii.Error):
            raise ValueError("the public key is not base64 of 32 bytes (Ed25519)") from None

    def to_json(self) -> dict[str, str]:
        """As printed by ``broker audit key``."""
        return {"algorithm": "Ed25519", **asdict(self)}
