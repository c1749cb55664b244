"""Who is calling: agent keys, signed envelopes, the time window and the replay guard.

An agent signs the exact bytes of a serialized ``Envelope`` with Ed25519. The broker looks up the
key id, checks the signature over those bytes, and only then parses them. Every failure has its
own reason, so an operator can tell a clock problem from a forgery.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from google.protobuf.message import DecodeError

from broker import errors
from broker.policy import AgentKey, PolicySet
from broker.store import Store
from broker.v1 import broker_pb2 as pb

_NONCE = re.compile(r"^[A-Za-z0-9_-]{22,128}={0,2}$")
MAX_PAYLOAD_BYTES = 1024 * 1024


@dataclass(frozen=True)
class RegisteredKey:
    """A public key the broker trusts, and the agent it belongs to."""

    key_id: str
    agent: str
    public_key: Ed25519PublicKey | None  # None: a key gone since it signed an approved call
    spec: AgentKey | None  # None for a development key made by the broker itself


class KeyRegistry:
    """Every agent key in force, by key id."""

    def __init__(self, keys: list[RegisteredKey]) -> None:
        self._keys = {key.key_id: key for key in keys}

    @classmethod
    def from_policies(cls, policies: PolicySet, extra: Sequence[RegisteredKey] = ()) -> KeyRegistry:
        """The keys named in the policy files, plus ``extra`` (development keys)."""
        keys = [
            RegisteredKey(
                key.id, policy.agent, Ed25519PublicKey.from_public_bytes(key.public_bytes), key
            )
            for policy in policies.policies.values()
            for key in policy.keys
        ]
        return cls([*keys, *extra])

    def get(self, key_id: str) -> RegisteredKey | None:
        """The key with this id, or None."""
        return self._keys.get(key_id)


class ReplayGuard:
    """Nonces accepted inside the time window.

    They are checked in memory; their durable copy is the audit row of the request that used
    them, committed before its answer leaves. After a restart the guard reloads the nonces of
    recent audit rows. (A hard crash while a request is still running loses that request's row
    and so its nonce; writes are protected separately by their idempotency intent row.)
    """

    def __init__(self, store: Store, window_ms: int) -> None:
        self._window_ms = window_ms
        # A nonce recorded at t has issued_at >= t - window, so it goes stale by t + 2 windows.
        now = now_ms()
        recent = store.recent_nonces(now - 2 * window_ms)
        self._seen = {nonce: ts + 2 * window_ms for nonce, ts in recent.items()}
        self._next_prune_ms = now + 10_000

    def claim(self, nonce: str, expires_at_ms: int, now: int) -> bool:
        """True the first time ``nonce`` is seen; False for a replay."""
        if nonce in self._seen:
            return False
        self._seen[nonce] = expires_at_ms
        if now >= self._next_prune_ms:
            self._seen = {n: exp for n, exp in self._seen.items() if exp >= now}
            self._next_prune_ms = now + 10_000
        return True


@dataclass(frozen=True)
class Verified:
    """An envelope whose signature, key, audience, body, time and nonce all checked out."""

    envelope: pb.Envelope
    key: RegisteredKey

    @property
    def agent(self) -> str:
        """The agent that signed."""
        return self.key.agent


def verify_envelope(
    signed: pb.SignedRequest,
    body: str,
    keys: KeyRegistry,
    *,
    audience: str,
    window_ms: int,
    replay: ReplayGuard,
    now: int,
) -> Verified:
    """Check a SignedRequest meant for the RPC whose envelope body is ``body``.

    Order matters: nothing in the payload is parsed before its signature has been checked.
    """
    key = keys.get(signed.key_id)
    if key is None:
        raise errors.UnknownKey(
            f"key id '{signed.key_id[:128]}' is not in any policy; check the agent's key file"
        )
    if key.spec is not None and not key.spec.usable_at(datetime.now(UTC)):
        why = "is revoked" if key.spec.status == "revoked" else "has passed its not_after"
        raise errors.KeyRevoked(f"key '{key.key_id}' {why}; sign with the agent's current key")
    if len(signed.payload) > MAX_PAYLOAD_BYTES:
        raise errors.MalformedEnvelope("the payload is larger than 1 MiB")
    try:
        if key.public_key is None:
            raise InvalidSignature
        key.public_key.verify(signed.signature, signed.payload)
    except InvalidSignature:
        raise errors.BadSignature(
            f"the signature does not match the payload for key '{key.key_id}'; sign the exact "
            "serialized Envelope bytes with that key"
        ) from None
    envelope = _parse(signed.payload)
    if envelope.agent != key.agent:
        raise errors.UnknownKey(
            f"key '{key.key_id}' does not belong to agent '{envelope.agent[:64]}'"
        )
    if envelope.audience != audience:
        raise errors.WrongAudience(
            f"this broker is '{audience}', the request was signed for '{envelope.audience[:64]}'"
        )
    which = envelope.WhichOneof("body")
    if which != body:
        raise errors.MethodMismatch(
            f"the envelope carries a '{which}' body, but this RPC takes '{body}'"
        )
    skew = envelope.issued_at_ms - now
    if abs(skew) > window_ms:
        side = "in the future" if skew > 0 else "old"
        raise errors.StaleRequest(
            f"issued_at is {abs(skew) / 1000:.1f}s {side}; the window is +-{window_ms / 1000:g}s. "
            "Check the agent's clock and sign each request just before sending it"
        )
    if not _NONCE.match(envelope.nonce):
        raise errors.MalformedEnvelope(
            "nonce must be at least 16 random bytes, hex or base64url (at most 128 characters)"
        )
    if not replay.claim(envelope.nonce, envelope.issued_at_ms + window_ms, now):
        raise errors.ReplayedNonce(
            "this nonce was already used; every request needs a fresh nonce and signature"
        )
    return Verified(envelope, key)


def _parse(payload: bytes) -> pb.Envelope:
    envelope = pb.Envelope()
    try:
        envelope.ParseFromString(payload)
    except DecodeError:
        raise errors.MalformedEnvelope(
            "the payload is not a serialized broker.v1.Envelope"
        ) from None
    if not envelope.agent:
        raise errors.MalformedEnvelope("the envelope names no agent")
    return envelope


def now_ms() -> int:
    """Unix time in milliseconds."""
    return time.time_ns() // 1_000_000


# -- the signing side: agents, the SDK and tests ---------------------------------------------


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
