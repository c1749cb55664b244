"""Who is calling: the broker's side of a signed request (keys in force, the signature, the
time window, the replay guard). The agent's side is ``broker.signing``.

An agent signs the exact bytes of a serialized ``Envelope`` with Ed25519. The broker looks up the
key id, checks the signature over those bytes, and only then parses them. Every failure has its
own reason, so an operator can tell a clock problem from a forgery.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.message import DecodeError

from broker import errors
from broker.policy import AgentKey, PolicySet
from broker.signing import AgentCredentials, now_ms
from broker.storage.interfaces import AuditReader, NonceStore
from broker.v1 import broker_pb2 as pb

__all__ = [  # AgentCredentials and now_ms live in broker.signing; named here for callers
    "AgentCredentials",
    "KeyRegistry",
    "RegisteredKey",
    "ReplayGuard",
    "Verified",
    "now_ms",
    "verify_envelope",
]

_NONCE = re.compile(r"^[A-Za-z0-9_-]{22,128}={0,2}$")
MAX_PAYLOAD_BYTES = 1024 * 1024
FRONT_NAME = r"[a-z0-9_-]{1,32}"  # who signed for the agent (Envelope.front), e.g. mcp


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

    They are checked in memory; their durable copy is the audit record of the request that
    used them (its ``received`` record, committed before the call goes on). After a restart the
    guard reloads the nonces of recent audit records. (A hard crash while a request is still
    running loses that request's record and so its nonce; writes are protected separately by
    their idempotency intent row.)
    """

    def __init__(self, seen: dict[str, int], now: int, shared: NonceStore | None = None) -> None:
        self._seen = seen  # nonce -> when it goes stale (ms)
        self._next_prune_ms = now + 10_000
        self._shared = shared

    @classmethod
    async def load(
        cls, audit: AuditReader, window_ms: int, shared: NonceStore | None = None
    ) -> ReplayGuard:
        """A guard that remembers the nonces the audit trail recorded inside the window, and
        with ``shared`` (replicas) claims each in the shared state too."""
        # A nonce recorded at t has issued_at >= t - window, so it goes stale by t + 2 windows.
        now = now_ms()
        recent = await audit.recent_nonces(now - 2 * window_ms)
        return cls({nonce: ts + 2 * window_ms for nonce, ts in recent.items()}, now, shared)

    async def claim(self, nonce: str, expires_at_ms: int, now: int) -> bool:
        """True the first time ``nonce`` is seen, by this process and (with replicas) by any
        other; False for a replay. StoreError when the shared state cannot say."""
        if nonce in self._seen:
            return False
        # seen here first: a replay to this same process is refused without a round trip
        self._seen[nonce] = expires_at_ms
        if self._shared is not None and not await self._shared.claim(nonce, expires_at_ms):
            return False
        if now >= self._next_prune_ms:
            self._seen = {n: exp for n, exp in self._seen.items() if exp >= now}
            self._next_prune_ms = now + 10_000
            if self._shared is not None:
                await self._shared.prune(now)
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


async def verify_envelope(
    signed: pb.SignedRequest,
    body: str,
    keys: KeyRegistry,
    *,
    audience: str,
    window_ms: int,
    replay: ReplayGuard,
    now: int,
) -> Verified:
    """Check a SignedRequest meant for the RPC whose envelope body is ``body``, and claim its
    nonce last (a request refused for another reason does not use it up).

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
    if not await replay.claim(envelope.nonce, envelope.issued_at_ms + window_ms, now):
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
    if envelope.front and not re.fullmatch(FRONT_NAME, envelope.front):
        raise errors.MalformedEnvelope(
            "the envelope's front must be lower-case letters, digits, _ or - (at most 32)"
        )
    return envelope
