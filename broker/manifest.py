"""Tool manifests (``tools/<name>.yaml``): what an upstream system offers and how to reach it.

A manifest is reviewed like code, so the model is strict: unknown keys are errors, every action
says whether it reads or writes, and its arguments carry a JSON Schema that the broker enforces.
``ToolCatalog`` holds the loaded set and answers ``"invoices.pay"`` lookups.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from broker.units import Duration

NAME = r"^[a-z][a-z0-9_-]{0,62}$"
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


class HttpAction(BaseModel):
    """One action of an HTTP tool: a method and a path template under the tool's base_url."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    effect: Literal["read", "write"] = Field(description="A write changes something upstream.")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    path: str = Field(description="Path template; each {name} is a required string argument.")
    description: str = ""
    arguments: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="JSON Schema (2020-12) of the arguments object.",
    )

    @field_validator("path")
    @classmethod
    def _path_shape(cls, value: str) -> str:
        if not value.startswith("/") or "?" in value or "#" in value:
            raise ValueError("path must start with / and hold no ? or #; arguments fill {name}s")
        for name in _PLACEHOLDER.findall(value):
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
                raise ValueError(f"placeholder {{{name}}} must be a plain argument name")
        return value

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
    def _placeholders_are_required(self) -> HttpAction:
        required = set(self.arguments.get("required", []))
        for name in self.placeholders:
            if name not in required:
                raise ValueError(
                    f"path placeholder {{{name}}} must be listed in arguments.required"
                )
        return self

    @property
    def placeholders(self) -> list[str]:
        """The argument names the path template takes."""
        return _PLACEHOLDER.findall(self.path)

    @property
    def is_write(self) -> bool:
        """True when the action changes something upstream."""
        return self.effect == "write"


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
        for name in value:
            if not re.match(NAME, name):
                raise ValueError(f"action name '{name}' must be lower-case letters, digits, _ or -")
        return value


ToolManifest = HttpTool


@dataclass(frozen=True)
class ToolAction:
    """A resolved ``tool.action`` with its compiled argument validator."""

    full_name: str
    tool: ToolManifest
    name: str
    spec: HttpAction
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
