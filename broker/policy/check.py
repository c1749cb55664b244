"""Checking policies and tool manifests together, reporting every problem with its place.

The broker runs the same checks at start and on reload (any error refuses the set); ``broker
policy check`` prints them all for a pull request.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from broker.errors import ConfigError
from broker.manifest import MANIFEST_KINDS, CommandTool, ToolCatalog, ToolManifest
from broker.policy.evaluate import PolicySet
from broker.policy.model import Grant, Policy
from broker.yamlfile import Loc, Located, read_located, validate_located

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    """One finding of the checker, with its file and place."""

    severity: Literal["error", "warning"]
    file: str
    line: int | None
    column: int | None
    message: str

    def text(self) -> str:
        """``file:line:column: error: message``."""
        where = self.file if self.line is None else f"{self.file}:{self.line}:{self.column or 1}"
        return f"{where}: {self.severity}: {self.message}"

    def github(self) -> str:
        """A GitHub Actions annotation."""
        where = f"file={self.file}"
        if self.line is not None:
            where += f",line={self.line},col={self.column or 1}"
        message = self.message.replace("%", "%25").replace("\n", "%0A")
        return f"::{self.severity} {where}::{message}"

    def as_dict(self) -> dict[str, Any]:
        """For ``--format json``."""
        return asdict(self)


@dataclass
class FileSet:
    """The files that loaded, and every problem found in them."""

    tools: list[ToolManifest] = field(default_factory=list)
    policies: list[Policy] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    digest: str = ""

    @property
    def errors(self) -> list[Problem]:
        """The problems that refuse the set."""
        return [p for p in self.problems if p.severity == "error"]

    def policy_set(self) -> PolicySet:
        """The set in force; raises ConfigError for the first error."""
        if self.errors:
            first = self.errors[0]
            raise ConfigError(first.file, first.message, first.line, first.column)
        for warning in self.problems:
            log.warning("%s", warning.text())
        return PolicySet(self.policies, ToolCatalog(self.tools), self.digest)


def policy_files(folder: Path) -> list[Path]:
    """The policy files of a folder: ``*.yaml`` except the ``*_test.yaml`` beside them."""
    return sorted(p for p in folder.glob("*.yaml") if not p.stem.endswith("_test"))


def check_folders(policies: Path, tools: Path) -> FileSet:
    """Load and check a policies folder against a tools folder."""
    files = FileSet()
    for folder, kind in ((tools, "tools"), (policies, "policies")):
        if not folder.is_dir():
            files.problems.append(
                Problem("error", str(folder), None, None, f"the {kind} folder does not exist")
            )
    if files.problems:
        return files
    return check_files(policy_files(policies), sorted(tools.glob("*.yaml")))


def check_files(policy_paths: Iterable[Path], tool_paths: Iterable[Path]) -> FileSet:
    """Load every file, then check policies against the tools; nothing stops at the first
    problem."""
    policy_list = list(policy_paths)  # walked twice: loading, then naming files in errors
    files = FileSet()
    # The set's hash covers tools as well as policies: either can change a decision.
    digest = hashlib.sha256()
    for path in tool_paths:
        _hash_file(digest, "tools", path)
        loaded = _load(path, _manifest_model, files, key="name", kind="tool")
        if loaded is not None:
            tool = loaded[1]
            if isinstance(tool, CommandTool):
                tool = tool.with_paths_from(path.parent)
                _check_sandbox(files, path, loaded[0], tool)
            files.tools.append(tool)
    catalog = ToolCatalog(files.tools)
    seen_keys: dict[str, str] = {}
    for path in policy_list:
        _hash_file(digest, "policies", path)
        loaded = _load(path, Policy, files, key="agent", kind="policy")
        if loaded is None:
            continue
        doc, policy = loaded
        if policy.agent in {p.agent for p in files.policies}:
            _add(files, "error", path, doc, ("agent",), f"agent '{policy.agent}' is defined twice")
        for index, key in enumerate(policy.keys):
            if key.id in seen_keys:
                message = f"key id '{key.id}' is also used by {seen_keys[key.id]}"
                _add(files, "error", path, doc, ("keys", index, "id"), message)
            seen_keys[key.id] = policy.agent
        _check_grants(files, path, doc, policy, catalog)
        _check_credentials(files, path, doc, policy, catalog)
        files.policies.append(policy)
    _check_shared_secrets(files, policy_paths_by_agent(files.policies, policy_list))
    files.digest = digest.hexdigest()
    return files


def _hash_file(digest: Any, kind: str, path: Path) -> None:
    try:
        content = path.read_bytes()
    except OSError:
        content = b""  # reported as a problem by the loader
    digest.update(f"{kind}/{path.name}".encode() + b"\0" + hashlib.sha256(content).digest())


def _manifest_model(doc: Located, path: Path) -> Any:
    kind = doc.data.get("kind") if isinstance(doc.data, dict) else None
    model = MANIFEST_KINDS.get(str(kind))
    if model is None:
        line, column = doc.where(("kind",)) or (1, 1)
        raise ConfigError(
            str(path), f"kind must be one of: {', '.join(MANIFEST_KINDS)}", line, column
        )
    return model


def _load(
    path: Path, model: Any, files: FileSet, *, key: str, kind: str
) -> tuple[Located, Any] | None:
    try:
        doc = read_located(path)
        chosen = model(doc, path) if callable(model) and not isinstance(model, type) else model
        loaded = validate_located(doc, str(path), chosen)
    except ConfigError as exc:
        files.problems.append(Problem("error", exc.path, exc.line, exc.column, exc.message))
        return None
    name = getattr(loaded, key)
    if name != path.stem:
        message = f"{key} '{name}' must equal the file name '{path.stem}'"
        _add(files, "error", path, doc, (key,), f"{kind} {message}")
        return None
    return doc, loaded


def _add(
    files: FileSet,
    severity: Literal["error", "warning"],
    path: Path,
    doc: Located,
    loc: Loc,
    message: str,
) -> None:
    line, column = doc.where(loc) or (None, None)
    files.problems.append(Problem(severity, str(path), line, column, message))


def _check_grants(
    files: FileSet, path: Path, doc: Located, policy: Policy, catalog: ToolCatalog
) -> None:
    seen: set[str] = set()
    for index, grant in enumerate(policy.grants):
        loc: Loc = ("grants", index)
        if grant.tool in seen:
            _add(
                files,
                "error",
                path,
                doc,
                (*loc, "tool"),
                f"'{grant.tool}' is granted twice; merge the two grants",
            )
        seen.add(grant.tool)
        tool = catalog.tools.get(grant.tool_name)
        if tool is None:
            _add(
                files,
                "error",
                path,
                doc,
                (*loc, "tool"),
                f"grant '{grant.tool}': no tool manifest defines '{grant.tool_name}'",
            )
            continue
        if grant.is_wildcard:
            continue
        action = catalog.get(grant.tool)
        if action is None:
            actions = ", ".join(sorted(tool.actions))
            _add(
                files,
                "error",
                path,
                doc,
                (*loc, "tool"),
                f"grant '{grant.tool}': {tool.name} has no action '{grant.action_name}' "
                f"(it has: {actions})",
            )
            continue
        _check_arguments(files, path, doc, loc, grant, action.spec.arguments)
        if action.is_write and grant.approval == "never" and not grant.no_approval_because:
            _add(
                files,
                "warning",
                path,
                doc,
                (*loc, "approval"),
                f"'{grant.tool}' is a write that runs without a human; if that is intended, "
                "say why in no_approval_because",
            )


def _check_arguments(
    files: FileSet, path: Path, doc: Located, loc: Loc, grant: Grant, schema: dict[str, Any]
) -> None:
    named: list[tuple[Loc, str, Any]] = [
        ((*loc, "where", arg), arg, rule) for arg, rule in grant.where.items()
    ]
    if grant.approval is not None and not isinstance(grant.approval, str):
        when = grant.approval.when
        for i, condition in enumerate(when if isinstance(when, list) else [when]):
            base: Loc = (
                (*loc, "approval", "when", i)
                if isinstance(when, list)
                else (*loc, "approval", "when")
            )
            named += [((*base, arg), arg, rule) for arg, rule in condition.items()]
    for arg_loc, argument, rule in named:
        found = _schema_at(schema, argument)
        if found is None:
            known = ", ".join(sorted(schema.get("properties", {}))) or "none"
            _add(
                files,
                "error",
                path,
                doc,
                arg_loc,
                f"'{grant.tool}' has no argument '{argument}' (it has: {known})",
            )
        elif rule.every is not None and found.get("type") not in (None, "array"):
            _add(
                files,
                "error",
                path,
                doc,
                arg_loc,
                f"'every' needs a list, but '{argument}' is of type {found.get('type')}",
            )
        if rule.risky_regex:
            _add(
                files,
                "warning",
                path,
                doc,
                (*arg_loc, "regex"),
                "this regex repeats a group that itself repeats; it can be very slow on "
                "crafted input",
            )


def _schema_at(schema: dict[str, Any], dotted: str) -> dict[str, Any] | None:
    current = schema
    for part in dotted.split("."):
        properties = current.get("properties")
        if not isinstance(properties, dict) or part not in properties:
            return None
        current = properties[part]
    return current


def _check_sandbox(files: FileSet, path: Path, doc: Located, tool: CommandTool) -> None:
    bound = [*tool.sandbox.read_only, *tool.sandbox.read_write]
    for name, action in tool.actions.items():
        for argument, root in action.paths.items():
            if not any(root == b or root.startswith(b.rstrip("/") + "/") for b in bound):
                _add(
                    files,
                    "error",
                    path,
                    doc,
                    ("actions", name, "paths", argument),
                    f"{root} is not bound into the sandbox; add it to sandbox.read_only",
                )
    for index, folder in enumerate(bound):
        if not Path(folder).is_absolute():
            _add(
                files,
                "error",
                path,
                doc,
                ("sandbox",),
                f"sandbox path {index} '{folder}' must be absolute or start with ./ or ../",
            )


def _check_credentials(
    files: FileSet, path: Path, doc: Located, policy: Policy, catalog: ToolCatalog
) -> None:
    for key in policy.credentials:
        tool_name, slot = key.split(".", 1)
        tool = catalog.tools.get(tool_name)
        if tool is None or slot not in tool.credentials:
            known = ", ".join(sorted(tool.credentials)) if tool else "no such tool"
            _add(
                files,
                "error",
                path,
                doc,
                ("credentials", key),
                f"unknown credential slot '{key}' ({tool_name} has: {known or 'none'})",
            )
    needed: dict[str, int] = {}
    for index, grant in enumerate(policy.grants):
        tool = catalog.tools.get(grant.tool_name)
        if tool is not None:
            for slot in tool.credentials:
                needed.setdefault(f"{tool.name}.{slot}", index)
    for key, index in needed.items():
        if key not in policy.credentials:
            _add(
                files,
                "error",
                path,
                doc,
                ("grants", index, "tool"),
                f"the grant needs credential slot '{key}'; map it to a secret under credentials",
            )


def policy_paths_by_agent(policies: list[Policy], paths: Iterable[Path]) -> dict[str, Path]:
    """Which file each agent came from."""
    by_stem = {path.stem: path for path in paths}
    return {p.agent: by_stem[p.agent] for p in policies if p.agent in by_stem}


def _check_shared_secrets(files: FileSet, paths: dict[str, Path]) -> None:
    """One secret mapped for two agents is an error unless every mapping says shared: true:
    a compromised agent must not hold another agent's access by accident."""
    users: dict[str, list[tuple[str, str, bool]]] = {}
    for policy in files.policies:
        for key, entry in policy.credentials.items():
            name = entry if isinstance(entry, str) else entry.secret
            shared = not isinstance(entry, str) and entry.shared
            users.setdefault(name, []).append((policy.agent, key, shared))
    for secret, uses in sorted(users.items()):
        agents = sorted({agent for agent, _, _ in uses})
        if len(agents) < 2:
            continue
        for agent, key, shared in uses:
            if not shared and agent in paths:
                others = ", ".join(a for a in agents if a != agent)
                message = (
                    f"secret '{secret}' is also mapped for {others}; give each agent its own "
                    "secret, or write {secret: ..., shared: true}"
                )
                _add(
                    files,
                    "error",
                    paths[agent],
                    read_located(paths[agent]),
                    ("credentials", key),
                    message,
                )
