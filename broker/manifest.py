"""Tool manifests (``tools/<name>.yaml``): what an upstream system offers and how to reach it.

A manifest is reviewed like code, so the model is strict: unknown keys are errors, every action
says whether it reads or writes, and its arguments carry a JSON Schema that the broker enforces.
``ToolCatalog`` holds the loaded set and answers ``"invoices.pay"`` lookups.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from broker.units import Duration

NAME = r"^[a-z][a-z0-9_-]{0,62}$"
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_ARGUMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEADER = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")
_RESERVED_HEADERS = {"host", "content-length", "content-type", "transfer-encoding", "connection"}
T = TypeVar("T")


class CredentialSlot(BaseModel):
    """Where a tool takes a credential: a header, a query parameter, HTTP basic auth (the
    secret is ``user:password``) or, for command tools, an environment variable. Each agent's
    policy maps the slot to a secret of its own."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    header: str | None = Field(None, description="Header name, e.g. Authorization.")
    value: str = Field("{secret}", description="Header value; {secret} stands for the secret.")
    query: str | None = Field(None, description="Query parameter name.")
    basic: bool = Field(False, description="HTTP basic auth; the secret is user:password.")
    env: str | None = Field(None, description="Environment variable (command tools).")

    @model_validator(mode="after")
    def _one_place(self) -> CredentialSlot:
        places = [p for p in (self.header, self.query, self.env) if p is not None]
        if len(places) + self.basic != 1:
            raise ValueError("a credential slot names exactly one of header, query, basic, env")
        if self.header is not None and not _HEADER.match(self.header):
            raise ValueError(f"'{self.header}' is not a header name")
        if self.header is not None and self.header.lower() in _RESERVED_HEADERS:
            raise ValueError(f"the broker sets {self.header} itself")
        if self.value.count("{secret}") != 1:
            raise ValueError("value must hold {secret} exactly once")
        if self.env is not None and not re.match(r"^[A-Z_][A-Z0-9_]{0,63}$", self.env):
            raise ValueError(f"'{self.env}' is not an environment variable name")
        return self


class RateLimit(BaseModel):
    """At most ``requests`` calls per ``per``; a call over the limit waits up to ``queue``,
    else it is refused with RATE_LIMITED and the time a slot frees."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    requests: int = Field(gt=0, le=1_000_000)
    per: Duration
    queue: Duration = Field(0.0, description="How long a call may wait for a slot (0: none).")


class SoftLimitRule(BaseModel):
    """An answer that means "slow down" whatever its status: each given test must hold."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: int | None = Field(None, ge=100, le=599)
    json_path: str | None = Field(
        None,
        pattern=r"^\$(\.[A-Za-z0-9_-]+|\[[0-9]+\])*$",
        description="$.error or $.errors[0].code",
    )
    equals: str | int | bool | None = None
    contains: str | None = None
    body_regex: str | None = None

    @model_validator(mode="after")
    def _usable(self) -> SoftLimitRule:
        if (self.equals is not None or self.contains is not None) and self.json_path is None:
            raise ValueError("equals and contains need a json_path")
        if self.json_path is not None and self.equals is None and self.contains is None:
            raise ValueError("a json_path needs equals or contains")
        if self.status is None and self.json_path is None and self.body_regex is None:
            raise ValueError("write at least one of status, json_path, body_regex")
        if self.body_regex is not None:
            try:
                re.compile(self.body_regex)
            except re.error as exc:
                raise ValueError(f"body_regex does not compile: {exc}") from None
        return self


class RateLimitHeaders(BaseModel):
    """Headers an upstream uses to announce its own limit: remaining 0 with a reset (epoch
    seconds, or seconds from now) gives the tool a rest until then."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    remaining: str = "X-RateLimit-Remaining"
    reset: str = "X-RateLimit-Reset"


class Retries(BaseModel):
    """Reads that fail (5xx, connection, timeout, 429) are tried again with exponential backoff
    and full jitter, within the caller's deadline."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max: int = Field(2, ge=0, le=10, description="Further tries after the first.")
    base: Duration = 0.1
    cap: Duration = 5.0


class CircuitBreaker(BaseModel):
    """After ``failures`` failures in a row the tool fails fast for ``cool_down``; then one
    call is let through to test it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    failures: int = Field(5, ge=1, le=1000)
    cool_down: Duration = 30.0


class Action(BaseModel):
    """What every action has: whether it writes, a description, and its arguments' schema."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    effect: Literal["read", "write"] = Field(description="A write changes something upstream.")
    description: str = ""
    cost: int = Field(1, ge=0, le=1_000_000, description="Cost units a call spends of budgets.")
    arguments: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="JSON Schema (2020-12) of the arguments object.",
    )
    # What a write does, for agents and the people approving (MCP's tool annotations). The
    # defaults assume the worst: a write may destroy, and repeating it does it again.
    destructive: bool | None = Field(
        None, description="A write that may delete or overwrite (default true); writes only."
    )
    idempotent: bool | None = Field(
        None,
        description="A write that, repeated with the same arguments, changes nothing more "
        "(default false); writes only.",
    )

    @field_validator("arguments")
    @classmethod
    def _schema_valid(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            jsonschema.Draft202012Validator.check_schema(value)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
        if value.get("type") != "object":
            raise ValueError("the arguments schema must have type: object")
        return value

    @model_validator(mode="after")
    def _write_hints_on_writes(self) -> Action:
        if self.effect == "read" and (self.destructive is not None or self.idempotent is not None):
            raise ValueError("destructive and idempotent describe writes; a read has neither")
        return self

    @property
    def is_write(self) -> bool:
        """True when the action changes something upstream."""
        return self.effect == "write"

    @property
    def is_destructive(self) -> bool:
        """A write that may delete or overwrite (unless the manifest says it only adds)."""
        return self.is_write and self.destructive is not False

    @property
    def is_idempotent(self) -> bool:
        """A read, or a write the manifest calls idempotent."""
        return not self.is_write or self.idempotent is True

    def _require(self, names: list[str], where: str) -> None:
        required = set(self.arguments.get("required", []))
        for name in names:
            if name not in required:
                raise ValueError(f"{where} {{{name}}} must be listed in arguments.required")


class HttpAction(Action):
    """One action of an HTTP tool: a method and a path template under the tool's base_url."""

    untrusted_output: bool = Field(
        False,
        description="The answer carries outside content (mail, web pages, documents): "
        "clean it, report what it hides, and remember its values for the task.",
    )

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    path: str = Field(description="Path template; each {name} is a required string argument.")

    @field_validator("path")
    @classmethod
    def _path_shape(cls, value: str) -> str:
        if not value.startswith("/") or "?" in value or "#" in value:
            raise ValueError("path must start with / and hold no ? or #; arguments fill {name}s")
        for name in _PLACEHOLDER.findall(value):
            if not _ARGUMENT.match(name):
                raise ValueError(f"placeholder {{{name}}} must be a plain argument name")
        return value

    @model_validator(mode="after")
    def _placeholders_are_required(self) -> HttpAction:
        self._require(self.placeholders, "path placeholder")
        return self

    @property
    def placeholders(self) -> list[str]:
        """The argument names the path template takes."""
        return _PLACEHOLDER.findall(self.path)


class CommandAction(Action):
    """One action of a command tool: an argv (never a shell) run in the tool's sandbox. Each
    ``{name}`` in an argv item is replaced by that argument's value, inside that one item."""

    command: list[str] = Field(min_length=1, description="argv; {name} takes an argument.")
    untrusted_output: bool = Field(
        True, description="Command output is treated as outside content unless set to false."
    )
    stdin: Literal["none", "json"] = Field(
        "none", description="json: the arguments object is written to the tool's stdin."
    )
    paths: dict[str, str] = Field(
        default_factory=dict,
        description="argument -> folder: the argument is a path that must stay inside it.",
    )

    @field_validator("command")
    @classmethod
    def _argv_shape(cls, value: list[str]) -> list[str]:
        for item in value:
            for name in _PLACEHOLDER.findall(item):
                if not _ARGUMENT.match(name):
                    raise ValueError(f"placeholder {{{name}}} must be a plain argument name")
        if _PLACEHOLDER.search(value[0]):
            raise ValueError("the program (the first item) cannot come from an argument")
        return value

    @model_validator(mode="after")
    def _placeholders_are_required(self) -> CommandAction:
        self._require(self.placeholders, "command placeholder")
        for argument in self.paths:
            if argument not in self.placeholders:
                raise ValueError(f"paths names '{argument}', which the command does not take")
        return self

    @property
    def placeholders(self) -> list[str]:
        """The argument names the argv takes."""
        return [name for item in self.command for name in _PLACEHOLDER.findall(item)]


class SandboxConfig(BaseModel):
    """What a command tool may use. Paths are bound at the same place inside the sandbox."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    network: bool = False
    timeout: Duration = 10.0
    cpu_seconds: int = Field(10, ge=1, le=3600)
    memory_mb: int = Field(256, ge=16, le=65536)
    max_file_mb: int = Field(16, ge=1, le=65536)
    max_processes: int = Field(32, ge=1, le=4096)
    max_stdout_kb: int = Field(1024, ge=1, le=65536)
    max_stderr_kb: int = Field(64, ge=1, le=65536)
    read_only: list[str] = Field(default_factory=list)
    read_write: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)


class HttpTool(BaseModel):
    """A manifest of ``kind: http``: an upstream HTTP API and its actions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=NAME, description="Equal to the file name without .yaml.")
    kind: Literal["http"]
    description: str = ""
    base_url: str = Field(description="Scheme, host and optional port (and path prefix).")
    allow_private_network: bool = Field(
        False, description="Allow loopback, private and link-local upstream addresses."
    )
    timeout: Duration = Field(10.0, description="Upstream timeout, at most the caller's deadline.")
    max_response_bytes: int = Field(4 * 1024 * 1024, gt=0, le=64 * 1024 * 1024)
    max_argument_bytes: int = Field(
        64 * 1024, gt=0, le=256 * 1024, description="The largest single argument value."
    )
    credentials: dict[str, CredentialSlot] = Field(
        default_factory=dict, description="Slot name -> where the credential goes."
    )
    rate_limit: RateLimit | None = Field(None, description="For every agent together.")
    rate_limited_when: list[SoftLimitRule] = Field(
        default_factory=lambda: [SoftLimitRule(status=429)],
        description="Answers that mean slow down (UPSTREAM_RATE_LIMITED), 429 among them.",
    )
    rate_limit_headers: RateLimitHeaders = Field(default_factory=lambda: RateLimitHeaders())
    retries: Retries = Field(default_factory=Retries)
    idempotency_header: str | None = Field(
        None,
        description="The upstream's idempotency header: writes may then be retried, "
        "sending the call's idempotency key in it.",
    )
    circuit_breaker: CircuitBreaker = Field(default_factory=CircuitBreaker)
    actions: dict[str, HttpAction] = Field(min_length=1)

    @field_validator("base_url")
    @classmethod
    def _base_url_shape(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("base_url must be http:// or https:// with a host")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("base_url holds no query, fragment or credentials")
        return value.rstrip("/")

    @field_validator("actions")
    @classmethod
    def _action_names(cls, value: dict[str, HttpAction]) -> dict[str, HttpAction]:
        return _names(value)

    @field_validator("credentials")
    @classmethod
    def _http_slots(cls, value: dict[str, CredentialSlot]) -> dict[str, CredentialSlot]:
        for slot, spec in _names(value).items():
            if spec.env is not None:
                raise ValueError(f"slot {slot}: env is for command tools; use header or query")
        return value


class CommandTool(BaseModel):
    """A manifest of ``kind: command``: local programs run one call at a time in a sandbox.
    Relative paths (``./scripts``) are taken from the manifest's own folder."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=NAME, description="Equal to the file name without .yaml.")
    kind: Literal["command"]
    description: str = ""
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    credentials: dict[str, CredentialSlot] = Field(default_factory=dict)
    rate_limit: RateLimit | None = Field(None, description="For every agent together.")
    circuit_breaker: CircuitBreaker = Field(default_factory=CircuitBreaker)
    actions: dict[str, CommandAction] = Field(min_length=1)

    @field_validator("actions")
    @classmethod
    def _action_names(cls, value: dict[str, CommandAction]) -> dict[str, CommandAction]:
        return _names(value)

    @field_validator("credentials")
    @classmethod
    def _env_slots(cls, value: dict[str, CredentialSlot]) -> dict[str, CredentialSlot]:
        for slot, spec in _names(value).items():
            if spec.env is None:
                raise ValueError(f"slot {slot}: a command tool takes credentials as env")
        return value

    def with_paths_from(self, folder: Path) -> CommandTool:
        """This manifest with ``./`` and ``../`` paths resolved against ``folder``."""

        def fix(path: str) -> str:
            return str((folder / path).resolve()) if path.startswith(("./", "../")) else path

        sandbox = self.sandbox.model_copy(
            update={
                "read_only": [fix(p) for p in self.sandbox.read_only],
                "read_write": [fix(p) for p in self.sandbox.read_write],
            }
        )
        actions = {
            name: action.model_copy(
                update={
                    "command": [fix(item) for item in action.command],
                    "paths": {arg: fix(root) for arg, root in action.paths.items()},
                }
            )
            for name, action in self.actions.items()
        }
        return self.model_copy(update={"sandbox": sandbox, "actions": actions})


ToolManifest = HttpTool | CommandTool
MANIFEST_KINDS: dict[str, type[HttpTool] | type[CommandTool]] = {
    "http": HttpTool,
    "command": CommandTool,
}


def _names(value: dict[str, T]) -> dict[str, T]:
    for name in value:
        if not re.match(NAME, name):
            raise ValueError(f"'{name}' must be lower-case letters, digits, _ or -")
    return value


@dataclass(frozen=True)
class ToolAction:
    """A resolved ``tool.action`` with its compiled argument validator."""

    full_name: str
    tool: ToolManifest
    name: str
    spec: HttpAction | CommandAction
    validator: jsonschema.protocols.Validator

    @property
    def is_write(self) -> bool:
        """True when the action changes something upstream."""
        return self.spec.is_write

    def schema_problem(self, arguments: Any) -> str | None:
        """None when ``arguments`` fit the schema, else one line naming the argument and the
        rule, e.g. ``$.amount: 5 is not of type 'string' (rule: type)``."""
        error = jsonschema.exceptions.best_match(self.validator.iter_errors(arguments))
        if error is None:
            return None
        message = str(error.message)
        if len(message) > 300:
            message = message[:297] + "..."
        return f"{error.json_path}: {message} (rule: {error.validator})"


class ToolCatalog:
    """Every loaded tool manifest, indexed by ``tool.action``."""

    def __init__(self, tools: list[ToolManifest]) -> None:
        self.tools = {tool.name: tool for tool in tools}
        self._actions: dict[str, ToolAction] = {}
        for tool in tools:
            for name, spec in tool.actions.items():
                full = f"{tool.name}.{name}"
                self._actions[full] = ToolAction(full, tool, name, spec, _compile(spec.arguments))

    def get(self, full_name: str) -> ToolAction | None:
        """The action called ``tool.action``, or None."""
        return self._actions.get(full_name)

    def actions(self) -> list[ToolAction]:
        """All actions, sorted by name."""
        return [self._actions[name] for name in sorted(self._actions)]


def _compile(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    # Strict unless the manifest says otherwise: an argument the schema does not name is refused.
    strict = {"additionalProperties": False, **schema}
    return jsonschema.Draft202012Validator(strict, format_checker=None)
