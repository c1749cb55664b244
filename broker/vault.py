"""Secrets that only the broker can read: encrypted at rest, injected at the last moment.

Values are sealed with AES-256-GCM under the master key; the secret's name is bound as
associated data, so a ciphertext copied to another name does not decrypt. The master key comes
from ``BROKER_MASTER_KEY`` (base64 of 32 bytes) or from the file named by ``master_key_file``
(mode 0600 or stricter). Without it the broker runs *sealed*: calls that need a credential fail
with SEALED; everything else works.

The audit never holds a value, only an HMAC-SHA256 fingerprint under a key derived from the
master key, so an operator can ask "was this value used?" (``broker audit fingerprint``)
without the audit revealing it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from broker import errors
from broker.errors import ConfigError
from broker.manifest import CredentialSlot
from broker.redactor import Redactor
from broker.settings import BrokerSettings
from broker.storage.interfaces import SecretStore
from broker.storage.records import SecretRow

MASTER_KEY_ENV = "BROKER_MASTER_KEY"
RECHECK_S = 0.5  # a `broker secrets` change reaches a running broker within this


def load_master_key(settings: BrokerSettings, env: Mapping[str, str]) -> bytes | None:
    """The master key from the environment or the key file; None (sealed) when neither is
    given; a ConfigError when one is given but unusable (never silently sealed)."""
    if env.get(MASTER_KEY_ENV):
        return _decode_key(env[MASTER_KEY_ENV], MASTER_KEY_ENV)
    path = settings.master_key_file
    if path is None:
        return None
    try:
        info = path.stat()
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"cannot read the master key file: {exc}") from None
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise ConfigError(
            str(path), f"the master key file is readable by others; run: chmod 600 {path}"
        )
    return _decode_key(text, str(path))


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise ConfigError(
            where,
            "the master key must be base64 of 32 random bytes; make one "
            "with: head -c 32 /dev/urandom | base64",
        )
    return key


class SecretBox:
    """Encrypts, decrypts and fingerprints secret values under one master key."""

    def __init__(self, master_key: bytes) -> None:
        self._aead = AESGCM(master_key)
        self._fingerprint_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"toolbroker fingerprint v1"
        ).derive(master_key)

    def seal(self, name: str, value: bytes) -> tuple[bytes, bytes]:
        """(nonce, ciphertext) for ``value`` stored under ``name``."""
        nonce = os.urandom(12)
        return nonce, self._aead.encrypt(nonce, value, _aad(name))

    def open(self, row: SecretRow) -> bytes:
        """The value of a stored secret; SEALED when the key is not the one it was sealed
        with (or the row was tampered with)."""
        try:
            return self._aead.decrypt(row.nonce, row.ciphertext, _aad(row.name))
        except InvalidTag:
            raise errors.Sealed(
                f"secret '{row.name}' does not decrypt with the master key in use; was it set "
                "under another key?"
            ) from None

    def fingerprint(self, value: bytes) -> str:
        """HMAC-SHA256 of the value, hex; equal values give equal fingerprints."""
        return hmac.new(self._fingerprint_key, value, hashlib.sha256).hexdigest()


def _aad(name: str) -> bytes:
    return f"toolbroker secret v1:{name}".encode()


@dataclass(frozen=True)
class UsedSecret:
    """A secret as one call used it: for injection, redaction and the audit."""

    name: str
    value: str
    fingerprint: str


@dataclass(frozen=True)
class Injected:
    """One credential for one call: the tool's slot, where it goes, and the secret."""

    slot: str
    spec: CredentialSlot
    secret: UsedSecret

    @property
    def value(self) -> str:
        """What goes on the wire: the slot's template filled with the secret."""
        return self.spec.value.replace("{secret}", self.secret.value)


class Vault:
    """The broker's view of its secrets: decrypted once, reloaded when the store's version
    says they changed (the ``broker secrets`` command, another process), sealed without a
    master key."""

    def __init__(self, store: SecretStore, box: SecretBox | None) -> None:
        self._store = store
        self._box = box
        self._version: int | None = None
        self._values: dict[str, str] = {}
        self._redactor = Redactor({})
        self._noted_ms: dict[str, int] = {}
        self._next_check = 0.0
        self._looking: asyncio.Future[None] | None = None

    @property
    def sealed(self) -> bool:
        """True when the broker has no master key."""
        return self._box is None

    async def get(self, name: str, now_ms: int) -> UsedSecret:
        """A secret's value; SEALED without a master key, SECRET_NOT_SET when it is missing."""
        if self._box is None:
            raise errors.Sealed(
                "the broker is sealed (no master key), so it cannot use credentials; start it "
                f"with {MASTER_KEY_ENV} or master_key_file"
            )
        await self._refresh()
        value = self._values.get(name)
        if value is None:
            raise errors.SecretNotSet(
                f"secret '{name}' is not set; an operator sets it with: broker secrets set {name}"
            )
        if now_ms - self._noted_ms.get(name, 0) > 60_000:  # last use, to the minute
            self._noted_ms[name] = now_ms
            self._store.used(name, now_ms)
        return UsedSecret(name, value, self._box.fingerprint(value.encode()))

    async def redactor(self) -> Redactor:
        """Replaces every secret's value (in its usual encodings) with ``[REDACTED:name]``."""
        if self._box is not None:
            await self._refresh()
        return self._redactor

    async def _refresh(self) -> None:
        """Reload the values when the store's version moved (looked at every RECHECK_S); a
        call arriving while that look is under way waits for it."""
        if self._box is None:
            return
        if self._looking is None:
            now = time.monotonic()
            if now < self._next_check:
                return
            self._next_check = now + RECHECK_S
            self._looking = asyncio.ensure_future(self._reload())
            self._looking.add_done_callback(self._looked)
        await asyncio.shield(self._looking)

    def _looked(self, look: asyncio.Future[None]) -> None:
        self._looking = None
        if not look.cancelled() and look.exception() is not None:
            self._next_check = 0.0  # look again at the next call

    async def _reload(self) -> None:
        version = await self._store.version()
        if version == self._version:
            return
        values = {row.name: self.open(row) for row in await self._store.rows()}
        self._values = values
        self._redactor = Redactor(values)
        self._version = version

    def open(self, row: SecretRow) -> str:
        """A stored secret's value (SEALED when it does not decrypt)."""
        if self._box is None:
            raise errors.Sealed("the broker is sealed (no master key)")
        return self._box.open(row).decode("utf-8", errors="strict")
