"""What a change to policies (or tools) does to each agent's powers, riskiest first, as Markdown
for a pull-request comment.

Both sides are compared by what each agent can actually call (wildcards expanded against that
side's tools), so a tool that gains an action, or an action that becomes a write, shows up too.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from broker.manifest import ToolAction
from broker.policy.constraints import Constraint
from broker.policy.evaluate import GrantRef, PolicySet
from broker.policy.model import Grant, Policy

# Lower is riskier; the Markdown lists changes in this order.
NEW_WRITE, LESS_APPROVAL, WIDENED, CREDENTIAL, KEY, NEW_READ, NARROWED = range(7)
_TAGS = {
    NEW_WRITE: "new write",
    LESS_APPROVAL: "less approval",
    WIDENED: "widened",
    CREDENTIAL: "credential",
    KEY: "key",
    NEW_READ: "new read",
    NARROWED: "narrowed",
}


@dataclass(frozen=True, order=True)
class Change:
    """One difference in what an agent may do."""

    risk: int
    agent: str
    text: str

    @property
    def tag(self) -> str:
        """A short label for the kind of change."""
        return _TAGS[self.risk]


def diff_sets(old: PolicySet, new: PolicySet) -> list[Change]:
    """Every change from ``old`` to ``new``, riskiest first."""
    changes: list[Change] = []
    for agent in sorted(set(old.policies) | set(new.policies)):
        changes += _diff_agent(agent, old, new)
    return sorted(changes)


def _diff_agent(agent: str, old: PolicySet, new: PolicySet) -> list[Change]:
    before = {a.full_name: (a, r) for a, r in old.granted_actions(agent)}
    after = {a.full_name: (a, r) for a, r in new.granted_actions(agent)}
    changes: list[Change] = []
    if agent not in old.policies:
        changes.append(Change(NEW_READ, agent, "new agent"))
    if agent not in new.policies:
        return [Change(NARROWED, agent, "agent removed: it can no longer call anything")]
    for name in sorted(set(after) - set(before)):
        action, ref = after[name]
        if action.is_write:
            changes.append(
                Change(
                    NEW_WRITE,
                    agent,
                    f"may now call the write `{name}` ({_approval_words(ref.grant, action)})",
                )
            )
        else:
            changes.append(Change(NEW_READ, agent, f"may now call the read `{name}`"))
    for name in sorted(set(before) - set(after)):
        changes.append(Change(NARROWED, agent, f"may no longer call `{name}`"))
    for name in sorted(set(before) & set(after)):
        changes += _diff_grant(agent, name, before[name], after[name])
    changes += _diff_keys(agent, old.policies.get(agent), new.policies[agent])
    return changes


def _diff_grant(
    agent: str, name: str, old: tuple[ToolAction, GrantRef], new: tuple[ToolAction, GrantRef]
) -> list[Change]:
    (old_action, old_ref), (new_action, new_ref) = old, new
    changes = []
    if new_action.is_write and not old_action.is_write:
        changes.append(Change(NEW_WRITE, agent, f"`{name}` is now a write"))
    old_level = _approval_level(old_ref.grant, old_action)
    new_level = _approval_level(new_ref.grant, new_action)
    if new_level < old_level:
        risk = LESS_APPROVAL if new_action.is_write else WIDENED
        changes.append(
            Change(
                risk,
                agent,
                f"`{name}`: approval was {_approval_words(old_ref.grant, old_action)}, "
                f"now {_approval_words(new_ref.grant, new_action)}",
            )
        )
    elif new_level > old_level:
        changes.append(
            Change(
                NARROWED,
                agent,
                f"`{name}`: approval now {_approval_words(new_ref.grant, new_action)}",
            )
        )
    if old_ref.grant.on_taint == "deny" and new_ref.grant.on_taint == "approve":
        changes.append(
            Change(
                WIDENED,
                agent,
                f"`{name}`: values from untrusted content are now "
                "sent to a human instead of refused",
            )
        )
    for argument in sorted(set(old_ref.grant.where) | set(new_ref.grant.where)):
        before = old_ref.grant.where.get(argument)
        after = new_ref.grant.where.get(argument)
        for widened, text in _diff_constraint(before, after):
            changes.append(
                Change(
                    WIDENED if widened else NARROWED,
                    agent,
                    f"`{name}` argument `{argument}`: {text}",
                )
            )
    return changes


def _diff_constraint(old: Constraint | None, new: Constraint | None) -> list[tuple[bool, str]]:
    """(widened?, what) for each rule that changed."""
    if old is None and new is None:
        return []
    if new is None:
        return [(True, "every rule removed")]
    if old is None:
        return [(False, f"new rules: {_rules(new)}")]
    out: list[tuple[bool, str]] = []
    for rule in ("min", "above"):
        out += _bound(rule, getattr(old, rule), getattr(new, rule), lower_is_wider=True)
    for rule in ("max", "below", "max_length"):
        out += _bound(rule, getattr(old, rule), getattr(new, rule), lower_is_wider=False)
    for rule in ("one_of", "email_domains", "url_hosts"):
        out += _members(rule, getattr(old, rule), getattr(new, rule))
    for rule in ("equals", "pattern", "regex"):
        before, after = getattr(old, rule), getattr(new, rule)
        if before != after:
            if after is None:
                out.append((True, f"{rule} {before!r} removed"))
            elif before is None:
                out.append((False, f"{rule} {after!r} added"))
            else:
                out.append((True, f"{rule} changed from {before!r} to {after!r}; review"))
    if old.every != new.every:
        out += [(w, f"every item: {t}") for w, t in _diff_constraint(old.every, new.every)]
    return out


def _bound(rule: str, old: Any, new: Any, *, lower_is_wider: bool) -> list[tuple[bool, str]]:
    if old == new:
        return []
    if new is None:
        return [(True, f"{rule} {old} removed")]
    if old is None:
        return [(False, f"{rule} {new} added")]
    wider = Decimal(new) < Decimal(old) if lower_is_wider else Decimal(new) > Decimal(old)
    return [(wider, f"{rule} {old} -> {new}")]


def _members(rule: str, old: list[Any] | None, new: list[Any] | None) -> list[tuple[bool, str]]:
    if old == new:
        return []
    if new is None:
        return [(True, f"{rule} removed (was {', '.join(map(str, old or []))})")]
    if old is None:
        return [(False, f"{rule} added: {', '.join(map(str, new))}")]
    added = [v for v in new if v not in old]
    removed = [v for v in old if v not in new]
    out = []
    if added:
        out.append((True, f"{rule} adds {', '.join(map(str, added))}"))
    if removed:
        out.append((False, f"{rule} drops {', '.join(map(str, removed))}"))
    return out


def _rules(constraint: Constraint) -> str:
    written = constraint.model_dump(exclude_none=True)
    return ", ".join(f"{key} {value}" for key, value in written.items())


def _approval_level(grant: Grant, action: ToolAction) -> int:
    setting = grant.approval or ("required" if action.is_write else "never")
    return {"never": 0, "required": 2}.get(setting, 1) if isinstance(setting, str) else 1


def _approval_words(grant: Grant, action: ToolAction) -> str:
    setting = grant.approval or ("required" if action.is_write else "never")
    if setting == "never":
        return "no approval"
    if setting == "required":
        return "approval required"
    return "approval only when a condition holds"


def _diff_keys(agent: str, old: Policy | None, new: Policy) -> list[Change]:
    before = {key.id: key for key in old.keys} if old else {}
    changes = []
    for key in new.keys:
        previous = before.get(key.id)
        if previous is None:
            changes.append(Change(KEY, agent, f"new key `{key.id}` ({key.status})"))
        elif previous.status != key.status:
            changes.append(Change(KEY, agent, f"key `{key.id}`: {previous.status} -> {key.status}"))
        elif previous.not_after != key.not_after:
            changes.append(
                Change(
                    KEY, agent, f"key `{key.id}`: not_after {previous.not_after} -> {key.not_after}"
                )
            )
    for key_id in sorted(set(before) - {key.id for key in new.keys}):
        changes.append(Change(NARROWED, agent, f"key `{key_id}` removed"))
    return changes


def markdown(changes: list[Change], title: str = "Policy changes") -> str:
    """The changes grouped by agent, riskiest agent first, for a PR comment."""
    if not changes:
        return f"## {title}\n\nNo change to what any agent may do.\n"
    risky = sum(1 for c in changes if c.risk < NARROWED)
    lines = [
        f"## {title}",
        "",
        f"{risky} change(s) that widen what agents may do, {len(changes) - risky} that narrow it.",
        "",
    ]
    by_agent: dict[str, list[Change]] = {}
    for change in changes:
        by_agent.setdefault(change.agent, []).append(change)
    for agent in sorted(by_agent, key=lambda a: (min(c.risk for c in by_agent[a]), a)):
        lines.append(f"### {agent}")
        lines += [f"- **{c.tag}**: {c.text}" for c in sorted(by_agent[agent])]
        lines.append("")
    return "\n".join(lines)
