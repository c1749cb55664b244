"""Deciding, in constant time, whether an agent holds a grant for an action."""

from __future__ import annotations

from broker.manifest import ToolAction, ToolCatalog
from broker.policy.model import Grant, Policy


class PolicySet:
    """The policies in force, indexed by agent and by ``tool.action``.

    A wildcard grant (``tool.*``) covers only the tool's reads: a write must be named.
    """

    def __init__(self, policies: list[Policy], catalog: ToolCatalog, digest: str) -> None:
        self.policies = {policy.agent: policy for policy in policies}
        self.catalog = catalog
        self.digest = digest
        self._named: dict[tuple[str, str], Grant] = {}
        self._wildcard: dict[tuple[str, str], Grant] = {}
        for policy in policies:
            for grant in policy.grants:
                index = self._wildcard if grant.is_wildcard else self._named
                key = grant.tool_name if grant.is_wildcard else grant.tool
                index.setdefault((policy.agent, key), grant)

    def grant_for(self, agent: str, action: ToolAction) -> Grant | None:
        """The grant that lets ``agent`` call ``action``, or None (deny by default)."""
        grant = self._named.get((agent, action.full_name))
        if grant is None and not action.is_write:
            grant = self._wildcard.get((agent, action.tool.name))
        return grant

    def granted_actions(self, agent: str) -> list[tuple[ToolAction, Grant]]:
        """Every action ``agent`` may call, sorted by name (what ListTools shows)."""
        found = []
        for action in self.catalog.actions():
            grant = self.grant_for(agent, action)
            if grant is not None:
                found.append((action, grant))
        return found
