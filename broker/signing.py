"""The signing side of a request: an agent's key pair, its key file, and signed envelopes.

An agent signs the exact bytes of a serialized ``Envelope`` with Ed25519; the broker checks
those bytes (``broker.identity``). This module is all an agent needs to sign: the SDK imports
it, and nothing of the broker's checking, storage or policy.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.v1 import broker_pb2 as pb


def now_ms() -> int:
    """Unix time in milliseconds."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class AgentCredentials:
    """What an agent signs with: its id, its key id and its private key."""

    agent: str
    key_id: str
    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls, agent: str, key_id: str | None = None) -> AgentCredentials:
        """A fresh key pair; the key id defaults to ``<agent>-<yyyy-mm>-<random>``."""
        key_id = key_id or f"{agent}-{datetime.now(UTC):%Y-%m}-{secrets.token_hex(3)}"
        return cls(agent, key_id, Ed25519PrivateKey.generate())

    @property
    def public_key_b64(self) -> str:
        """Base64 of the raw public key, as a policy file writes it."""
        return base64.b64encode(self.private_key.public_key().public_bytes_raw()).decode()

    def sign(self, envelope: pb.Envelope) -> pb.SignedRequest:
        """Serialize ``envelope`` once and sign exactly those bytes."""
        payload = envelope.SerializeToString()
        return pb.SignedRequest(
            payload=payload, key_id=self.key_id, signature=self.private_key.sign(payload)
        )

    def envelope(self, audience: str) -> pb.Envelope:
        """A new envelope with a fresh nonce and the current time; set its body before signing."""
        return pb.Envelope(
            agent=self.agent,
            audience=audience,
            nonce=secrets.token_urlsafe(18),
            issued_at_ms=now_ms(),
        )

    def save(self, path: Path) -> None:
        """Write the key file with mode 0600 (refuses to overwrite an existing file)."""
        data = {
            "agent": self.agent,
            "key_id": self.key_id,
            "ed25519_private": base64.b64encode(self.private_key.private_bytes_raw()).decode(),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")

    @classmethod
    def load(cls, path: Path) -> AgentCredentials:
        """Read a key file written by ``save`` (``broker keygen``)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            raw = base64.b64decode(data["ed25519_private"], validate=True)
            return cls(data["agent"], data["key_id"], Ed25519PrivateKey.from_private_bytes(raw))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a broker key file ({exc.__class__.__name__})") from None
