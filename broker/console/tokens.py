"""The console's signed tokens: one-time sign-in links, session cookies and CSRF tokens.

All three are HMAC-SHA256 under keys derived from one 32-byte key file (``console.key`` in the
data directory unless ``console.session_key_file`` names another, the same for every replica),
a different key per kind, so a link cannot pass for a session nor a session for a CSRF token.
A token is ``base64url(json claims) . base64url(mac)``; the claims say who and until when.
Single use of a link is not the token's business: the console claims its id once (see app).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from broker.devmode import ensure_key_file
from broker.settings import BrokerSettings

Kind = Literal["link", "session", "flow"]  # flow: an OIDC sign-in under way


class TokenRefused(Exception):
    """A token that is malformed, forged, of another kind, or expired (``expired`` says)."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


@dataclass(frozen=True)
class Claims:
    """What a valid token says: who, until when (ms), and its own random id."""

    user: str
    expires_ms: int
    token_id: str


def console_key_path(settings: BrokerSettings) -> Path:
    """Where the console's key lives."""
    configured = settings.console.session_key_file if settings.console else None
    return configured or settings.data_dir / "console.key"


class ConsoleTokens:
    """Makes and checks the console's links, sessions and CSRF tokens."""

    def __init__(self, key: bytes) -> None:
        self._keys = {
            purpose: hmac.new(key, f"toolbroker console {purpose}".encode(), "sha256").digest()
            for purpose in ("link", "session", "flow", "csrf")
        }

    @classmethod
    def of(cls, settings: BrokerSettings) -> ConsoleTokens:
        """The tokens of this broker's console key (made if missing)."""
        return cls(ensure_key_file(console_key_path(settings)))

    def issue(self, kind: Kind, user: str, ttl_s: float, now_ms: int) -> str:
        """A token of ``kind`` for ``user`` that expires ``ttl_s`` from ``now_ms``."""
        claims = {"u": user, "x": now_ms + int(ttl_s * 1000), "i": secrets.token_urlsafe(16)}
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        return f"{body}.{_b64(self._mac(kind, body))}"

    def read(self, kind: Kind, token: str, now_ms: int) -> Claims:
        """The claims of a valid, unexpired token of ``kind``; TokenRefused otherwise."""
        body, _, mac = token.partition(".")
        try:
            valid = hmac.compare_digest(_unb64(mac), self._mac(kind, body))
            claims = json.loads(_unb64(body)) if valid else None
            found = Claims(str(claims["u"]), int(claims["x"]), str(claims["i"])) if claims else None
        except (binascii.Error, ValueError, KeyError, TypeError):
            found = None
        if found is None:
            raise TokenRefused(f"this {kind} is not one the broker made")
        if found.expires_ms <= now_ms:
            raise TokenRefused(f"this {kind} has expired", expired=True)
        return found

    def csrf(self, session_id: str) -> str:
        """The CSRF token of one session: forms carry it, posts must return it."""
        return _b64(hmac.new(self._keys["csrf"], session_id.encode(), hashlib.sha256).digest())

    def csrf_valid(self, session_id: str, given: str) -> bool:
        """True when ``given`` is this session's CSRF token."""
        return hmac.compare_digest(self.csrf(session_id).encode(), given.encode())

    def _mac(self, kind: Kind, body: str) -> bytes:
        return hmac.new(self._keys[kind], body.encode(), hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text or len(text) > 4096:
        raise ValueError("empty or oversized token part")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
