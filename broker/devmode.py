"""Development conveniences that `make run` uses so a fresh clone works at once: a key pair
per agent, a master key file and random values for the example's secrets. Never in production:
the broker logs a warning whenever development keys are trusted."""

from __future__ import annotations

import base64
import logging
import os
import secrets
import time
from pathlib import Path

from broker.identity import RegisteredKey
from broker.signing import AgentCredentials
from broker.storage.interfaces import StateStore
from broker.vault import SecretBox

log = logging.getLogger(__name__)


def dev_key_path(data_dir: Path, agent: str) -> Path:
    """Where the development key of ``agent`` lives."""
    return data_dir / "dev-keys" / f"{agent}.key"


def dev_keys(data_dir: Path, agents: list[str]) -> list[RegisteredKey]:
    """A key pair per agent, made on first use and trusted without a policy entry."""
    keys = []
    for agent in agents:
        path = dev_key_path(data_dir, agent)
        if not path.exists():
            AgentCredentials.generate(agent, key_id=f"{agent}-dev").save(path)
        credentials = AgentCredentials.load(path)
        public = credentials.private_key.public_key()
        keys.append(RegisteredKey(credentials.key_id, agent, public, None))
    if keys:
        log.warning(
            "dev_keys is on: trusting development keys in %s; never use this in production",
            data_dir / "dev-keys",
        )
    return keys


def ensure_key_file(path: Path) -> bytes:
    """The 32-byte key in ``path`` (the master key, the console's key), made (mode 0600) if the
    file does not exist."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(base64.b64encode(os.urandom(32)).decode() + "\n")
    return base64.b64decode(path.read_text(encoding="ascii").strip())


async def ensure_secret(
    state: StateStore, master_key: bytes, name: str, value: str | None = None
) -> str:
    """The value of secret ``name``, stored (``value``, or a random one) if it is not set."""
    box = SecretBox(master_key)
    for row in await state.secrets.rows():
        if row.name == name:
            return box.open(row).decode()
    value = value or secrets.token_urlsafe(24)
    nonce, ciphertext = box.seal(name, value.encode())
    await state.secrets.put(name, nonce, ciphertext, int(time.time() * 1000), replace=False)
    return value
