"""The files in force (tools, policies, agent keys), loaded together and swapped as one."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from broker.identity import AgentCredentials, KeyRegistry, RegisteredKey
from broker.manifest import ToolCatalog
from broker.policy import PolicySet, load_policies
from broker.settings import BrokerSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """One consistent view of tools, policies and keys; a request uses one snapshot throughout."""

    catalog: ToolCatalog
    policies: PolicySet
    keys: KeyRegistry


def load_snapshot(settings: BrokerSettings) -> Snapshot:
    """Load tools, then policies checked against them; raises ConfigError on the first problem."""
    policies = load_policies(settings.policies, settings.tools)
    catalog = policies.catalog
    extra = dev_keys(settings.data_dir, sorted(policies.policies)) if settings.dev_keys else []
    return Snapshot(catalog, policies, KeyRegistry.from_policies(policies, extra))


def dev_key_path(data_dir: Path, agent: str) -> Path:
    """Where the development key of ``agent`` lives."""
    return data_dir / "dev-keys" / f"{agent}.key"


def dev_keys(data_dir: Path, agents: list[str]) -> list[RegisteredKey]:
    """Development only: a key pair per agent, made on first use and trusted without a policy
    entry. ``make run`` turns this on so a fresh clone can be tried at once."""
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
