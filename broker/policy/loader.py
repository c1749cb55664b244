"""Load every policy file in a folder and check it against the tool catalog."""

from __future__ import annotations

import hashlib
from pathlib import Path

from broker.errors import ConfigError
from broker.manifest import ToolCatalog
from broker.policy.evaluate import PolicySet
from broker.policy.model import Policy
from broker.yamlfile import load_model, parse_yaml


def policy_files(folder: Path) -> list[Path]:
    """The policy files of a folder: ``*.yaml`` except the ``*_test.yaml`` beside them."""
    return sorted(p for p in folder.glob("*.yaml") if not p.stem.endswith("_test"))


def load_policies(folder: Path, catalog: ToolCatalog) -> PolicySet:
    """Load and cross-check all policies; the first problem is a ConfigError with file and line."""
    if not folder.is_dir():
        raise ConfigError(str(folder), "the policies folder does not exist")
    digest = hashlib.sha256()
    policies: list[Policy] = []
    seen_keys: dict[str, str] = {}
    for path in policy_files(folder):
        raw = path.read_bytes()
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(raw).digest())
        policy = load_model(path, Policy)
        if policy.agent != path.stem:
            raise ConfigError(
                str(path),
                f"agent '{policy.agent}' must equal the file name",
                _line(path, ("agent",)),
            )
        _check_grants(path, policy, catalog)
        for index, key in enumerate(policy.keys):
            if key.id in seen_keys:
                line = _line(path, ("keys", index, "id"))
                raise ConfigError(
                    str(path), f"key id '{key.id}' is also used by {seen_keys[key.id]}", line
                )
            seen_keys[key.id] = policy.agent
        policies.append(policy)
    return PolicySet(policies, catalog, digest.hexdigest())


def _check_grants(path: Path, policy: Policy, catalog: ToolCatalog) -> None:
    for index, grant in enumerate(policy.grants):
        tool = catalog.tools.get(grant.tool_name)
        problem = None
        if tool is None:
            problem = f"grant '{grant.tool}': no tool manifest defines '{grant.tool_name}'"
        elif grant.is_wildcard:
            pass
        elif grant.action_name not in tool.actions:
            actions = ", ".join(sorted(tool.actions))
            problem = f"grant '{grant.tool}': {grant.tool_name} has no action "
            problem += f"'{grant.action_name}' (it has: {actions})"
        if problem:
            raise ConfigError(str(path), problem, _line(path, ("grants", index, "tool")))


def _line(path: Path, loc: tuple[str | int, ...]) -> int | None:
    where = parse_yaml(path.read_text(encoding="utf-8"), str(path)).where(loc)
    return where[0] if where else None
