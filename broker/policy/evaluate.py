"""Deciding what a policy says about one call: indexed lookups, no scans, no I/O.

The stages ask one question each (``grant_for``, ``constraint_violation``, ``approval_for``);
``decide`` asks them all in the pipeline's order, for ``broker policy explain``, ``test`` and
``replay``, so the offline answer is the one the broker gives.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from broker import errors
from broker.arguments import parse_arguments
from broker.manifest import ToolAction, ToolCatalog
from broker.policy.constraints import Constraint, Rules, lookup, show
from broker.policy.model import Grant, Policy
from broker.untrusted import TaintedValue, extract_taint, find_tainted
from broker.untrusted.outside_view import OutsideView, view_of_texts
from broker.untrusted.paths import leaves

Outcome = Literal["allow", "approval", "deny"]


Checks = tuple[tuple[str, Rules], ...]


@dataclass(frozen=True, slots=True)
class GrantRef:
    """A grant, where it is written (for messages that name the rule), and its constraints
    compiled for checking."""

    grant: Grant
    agent: str
    index: int
    where: Checks
    conditions: tuple[Checks, ...]  # approval: when ...; empty for required / never
    condition_texts: tuple[str, ...]  # each condition in words, for the approval message
    label: str  # invoice-agent.yaml grants[1]

    @classmethod
    def build(
        cls, grant: Grant, agent: str, index: int, compiled: dict[str, Rules] | None = None
    ) -> GrantRef:
        """Compile the grant's rules once, at load. Equal rules share one compiled object
        through ``compiled`` (policies written from templates repeat them a lot)."""
        cache = {} if compiled is None else compiled

        def rules(constraint: Constraint) -> Rules:
            key = constraint.model_dump_json()
            if key not in cache:
                cache[key] = constraint.compile()
            return cache[key]

        where = tuple((path, rules(rule)) for path, rule in grant.where.items())
        conditions: tuple[Checks, ...] = ()
        texts: tuple[str, ...] = ()
        if grant.approval is not None and not isinstance(grant.approval, str):
            alternatives = grant.approval.alternatives
            conditions = tuple(
                tuple((path, rules(rule)) for path, rule in alternative.items())
                for alternative in alternatives
            )
            texts = tuple(
                ", ".join(f"{path} {_rules(rule)}" for path, rule in alternative.items())
                for alternative in alternatives
            )
        label = f"{agent}.yaml grants[{index}]"
        return cls(grant, agent, index, where, conditions, texts, label)


@dataclass(frozen=True)
class Decision:
    """What the policy says: allow, approval (a human must decide) or deny (with a reason)."""

    outcome: Outcome
    reason: str = ""  # deny: the error reason; approval: write, condition or tainted
    rule: str = ""  # the grant that decided, e.g. invoice-agent.yaml grants[1]
    message: str = ""
    tainted: tuple[tuple[str, str, str], ...] = ()  # (argument path, outside value, origin)
    over: tuple[str, ...] = ()  # approval by condition: the argument paths it looked at

    def describe(self) -> str:
        """One line for people: ``deny ARGUMENT_NOT_ALLOWED by ...: message``."""
        head = self.outcome if not self.reason else f"{self.outcome} {self.reason}"
        rule = f" by {self.rule}" if self.rule else ""
        return f"{head}{rule}: {self.message}" if self.message else f"{head}{rule}"


class PolicySet:
    """The policies in force, indexed by (agent, tool.action).

    A wildcard grant (``tool.*``) covers only the tool's reads: a write must be named. A named
    grant wins over a wildcard for the same action.
    """

    def __init__(self, policies: list[Policy], catalog: ToolCatalog, digest: str) -> None:
        self.policies = {policy.agent: policy for policy in policies}
        self.catalog = catalog
        self.digest = digest
        self._named: dict[tuple[str, str], GrantRef] = {}
        self._wildcard: dict[tuple[str, str], GrantRef] = {}
        compiled: dict[str, Rules] = {}
        for policy in policies:
            for index, grant in enumerate(policy.grants):
                ref = GrantRef.build(grant, policy.agent, index, compiled)
                if grant.is_wildcard:
                    self._wildcard[(policy.agent, grant.tool_name)] = ref
                else:
                    self._named[(policy.agent, grant.tool)] = ref

    def grant_for(self, agent: str, action: ToolAction) -> GrantRef | None:
        """The grant that lets ``agent`` call ``action``, or None (deny by default)."""
        ref = self._named.get((agent, action.full_name))
        if ref is None and not action.is_write:
            ref = self._wildcard.get((agent, action.tool.name))
        return ref

    def granted_actions(self, agent: str) -> list[tuple[ToolAction, GrantRef]]:
        """Every action ``agent`` may call, sorted by name (what ListTools shows)."""
        found = []
        for action in self.catalog.actions():
            ref = self.grant_for(agent, action)
            if ref is not None:
                found.append((action, ref))
        return found

    def grants(self) -> Iterator[GrantRef]:
        """Every grant of every agent."""
        yield from self._named.values()
        yield from self._wildcard.values()

    @staticmethod
    def constraint_violation(ref: GrantRef, arguments: dict[str, Any]) -> str | None:
        """None when the arguments meet the grant's ``where``, else what broke, naming the
        argument, its value, the rule and the grant."""
        for path, rules in ref.where:
            present, value = lookup(arguments, path)
            if not present:
                continue
            problem = rules.violation(value)
            if problem:
                return f"argument '{path}' = {_brief(value)} breaks {problem} ({ref.label})"
        return None

    @staticmethod
    def approval_for(
        ref: GrantRef,
        action: ToolAction,
        arguments: dict[str, Any],
        tainted: Sequence[TaintedValue] = (),
        outside: OutsideView | None = None,
    ) -> Decision:
        """Whether a human must approve: the grant's approval setting, and, for writes, any
        argument carrying a value from untrusted content (a value of a recognised shape in
        ``tainted``, or any significant part found in the ``outside`` text) that no explicit
        rule allows."""
        grant = ref.grant
        if action.is_write and (tainted or outside is not None):
            hits = tuple(_tainted_arguments(ref, action, arguments, tainted, outside))
            if hits:
                shown = "; ".join(
                    f"{path} holds {value!r}, from {origin}" for path, value, origin in hits
                )
                message = f"arguments carry values from untrusted content: {shown}"
                if grant.on_taint == "deny":
                    return Decision(
                        "deny", errors.ArgumentNotAllowed.reason, ref.label, message, hits
                    )
                return Decision("approval", "tainted", ref.label, message, hits)
        setting = grant.approval or ("required" if action.is_write else "never")
        if setting == "never":
            return Decision("allow", rule=ref.label)
        if setting == "required":
            why = "a write" if action.is_write else "the grant asks for it"
            return Decision("approval", "write" if action.is_write else "required", ref.label, why)
        for condition, text in zip(ref.conditions, ref.condition_texts, strict=True):
            if all(_holds(arguments, path, rules) for path, rules in condition):
                paths = tuple(str(path) for path, _ in condition)
                why = f"condition holds: {text}"
                return Decision("approval", "condition", ref.label, why, over=paths)
        return Decision("allow", rule=ref.label)

    def decide(
        self,
        agent: str,
        tool: str,
        arguments: dict[str, Any] | str,
        tainted: Sequence[TaintedValue] = (),
        outside: OutsideView | None = None,
    ) -> Decision:
        """The whole answer for one call, in the order the broker's stages ask."""
        action = self.catalog.get(tool)
        if action is None:
            return Decision("deny", errors.UnknownTool.reason, message=f"no tool action '{tool}'")
        ref = self.grant_for(agent, action)
        if ref is None:
            return Decision(
                "deny",
                errors.ToolNotGranted.reason,
                message=f"agent '{agent}' is not granted '{tool}'",
            )
        try:
            parsed = parse_arguments(arguments) if isinstance(arguments, str) else arguments
        except errors.InvalidArguments as exc:
            return Decision("deny", exc.reason, ref.label, exc.message)
        problem = action.schema_problem(parsed)
        if problem:
            return Decision("deny", errors.InvalidArguments.reason, ref.label, problem)
        violation = self.constraint_violation(ref, parsed)
        if violation:
            return Decision("deny", errors.ArgumentNotAllowed.reason, ref.label, violation)
        return self.approval_for(ref, action, parsed, tainted, outside)


def _holds(arguments: dict[str, Any], path: str, rules: Rules) -> bool:
    present, value = lookup(arguments, path)
    return present and rules.violation(value) is None


def _rules(rule: Any) -> str:
    written = rule.model_dump(exclude_none=True, exclude_defaults=True)
    return ", ".join(f"{key} {value}" for key, value in written.items())


def _brief(value: Any) -> str:
    text = show(value) if isinstance(value, str | bool | int) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _tainted_arguments(
    ref: GrantRef,
    action: ToolAction,
    arguments: dict[str, Any],
    tainted: Sequence[TaintedValue],
    outside: OutsideView | None,
) -> Iterator[tuple[str, str, str]]:
    """(argument path, outside value, where it came from) for each argument holding a value
    from untrusted content that no explicit rule of the grant (equals, one_of, email_domains,
    url_hosts) allows and the tool's schema does not fix (enum, const). Values of recognised
    shapes match by kind (an IBAN with or without spaces, an address in any case, a host inside
    an email address or URL); any other significant part matches against the outside text."""
    hits = [(where, taint.value, taint.path) for where, taint in find_tainted(arguments, tainted)]
    if outside is not None and hits:  # the agent's own words and trusted answers vouch
        vouched = outside.vouched([value for _, value, _ in hits])
        hits = [hit for hit, fine in zip(hits, vouched, strict=True) if not fine]
    if outside is not None:
        strings = list(leaves(arguments, "$", numbers=True))
        found = outside.hits([text for _, text in strings])
        named = {where for where, _, _ in hits}  # a value of a known shape says it already
        hits += [
            (where, _brief(text), hit.where)
            for (where, text), hit in zip(strings, found, strict=True)
            if hit is not None and where not in named
        ]
    explicit = dict(ref.where)
    seen = set()
    for where, value, origin in hits:
        path = where.removeprefix("$.")
        if (path, value) in seen:
            continue
        seen.add((path, value))
        name = re.sub(r"\[[0-9]+\]", "", path)
        if _fixed_by_schema(action, name):
            continue
        rules = explicit.get(name)
        present, argument = lookup(arguments, name) if rules is not None else (False, None)
        values = argument if isinstance(argument, list) else [argument]
        if (
            rules is not None
            and present
            and all(isinstance(v, str) and rules.allows_explicitly(v) for v in values)
        ):
            continue
        yield path, value, origin


def _fixed_by_schema(action: ToolAction, name: str) -> bool:
    """Whether the action's argument schema fixes the argument at ``name`` (dotted) to listed
    values (``enum`` or ``const``): the tool chose those, not the text."""
    node: Any = action.spec.arguments
    for part in name.split("."):
        if not isinstance(node, dict):
            return False
        node = node.get("properties", {}).get(part)
        if isinstance(node, dict) and node.get("type") == "array":
            node = node.get("items")
    return isinstance(node, dict) and ("enum" in node or "const" in node)


def outside_values(texts: Sequence[str]) -> tuple[list[TaintedValue], OutsideView | None]:
    """What a person says came from outside (policy tests, explain): the values of recognised
    shapes in those texts, and the texts themselves as outside text."""
    found = [t for text in texts for t in extract_taint(text, path="the test case")]
    return found, view_of_texts(texts) if texts else None
