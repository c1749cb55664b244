"""The files in force (tools, policies, agent keys), loaded together and swapped as one."""

from __future__ import annotations

from dataclasses import dataclass

from broker.devmode import dev_keys
from broker.identity import KeyRegistry
from broker.manifest import ToolCatalog
from broker.policy import PolicySet, load_policies
from broker.settings import BrokerSettings


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
