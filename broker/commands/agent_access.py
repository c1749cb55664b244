"""How a command reaches the broker as an agent: the broker's address and id, and the agent's
key, checked against the agent it is said to belong to."""

from __future__ import annotations

from pathlib import Path

from broker import errors
from broker.settings import load_settings
from broker.signing import AgentCredentials

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_BROKER_ID = "broker.local"


def broker_address(config: Path | None, target: str | None, broker_id: str) -> tuple[str, str]:
    """(address, broker id): given ones first, then the config's, then the defaults."""
    address, identity = DEFAULT_TARGET, DEFAULT_BROKER_ID
    if config:
        settings = load_settings(config)
        address, identity = settings.listen, settings.broker_id
    return target or address, broker_id or identity


def agent_credentials(key: Path, agent: str) -> AgentCredentials:
    """The key file's credentials; a ConfigError when it is unreadable or another agent's."""
    try:
        credentials = AgentCredentials.load(key)
    except ValueError as exc:
        raise errors.ConfigError(str(key), str(exc).split(": ", 1)[-1]) from None
    if credentials.agent != agent:
        raise errors.ConfigError(
            str(key), f"this key belongs to agent '{credentials.agent}', not '{agent}'"
        )
    return credentials
