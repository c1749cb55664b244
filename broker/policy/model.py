"""The policy file (``policies/<agent>.yaml``) as pydantic models; unknown keys are errors."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from broker.manifest import RateLimit
from broker.policy.constraints import Constraint
from broker.units import Duration

AGENT_ID = r"^[a-z][a-z0-9_-]{0,62}$"
KEY_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
GRANT = re.compile(r"^([a-z][a-z0-9_-]{0,62})\.([a-z][a-z0-9_-]{0,62}|\*)$")
ArgumentPath = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")]


class AgentKey(BaseModel):
    """A public key an agent signs with. ``verify-only`` keys still verify during a rotation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=KEY_ID, description="Sent as SignedRequest.key_id.")
    ed25519: str = Field(description="Base64 of the 32-byte Ed25519 public key.")
    status: Literal["active", "verify-only", "revoked"] = "active"
    not_after: AwareDatetime | None = Field(
        None, description="After this instant the key is refused (ISO 8601 with a time zone)."
    )

    @field_validator("ed25519")
    @classmethod
    def _is_public_key(cls, value: str) -> str:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise ValueError("ed25519 must be base64 of 32 bytes; `broker keygen` prints one")
        return value

    @property
    def public_bytes(self) -> bytes:
        """The raw 32-byte public key."""
        return base64.b64decode(self.ed25519)

    def usable_at(self, now: datetime) -> bool:
        """False for a revoked key or one past its not_after."""
        return self.status != "revoked" and (self.not_after is None or now <= self.not_after)


class ToolBudget(BaseModel):
    """How much of one action an agent may use per UTC day."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    calls_per_day: int | None = Field(None, ge=0)
    cost_per_day: int | None = Field(None, ge=0)


class LoopGuard(BaseModel):
    """The same call (tool and identical arguments) ``repeats`` times within ``within`` is a
    loop: LOOP_DETECTED; after ``freeze_after`` loops in a day the agent is frozen."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    repeats: int = Field(5, ge=2, le=10_000)
    within: Duration = Field(
        60.0, gt=0, le=86400, description="The window, at most a day (what is remembered)."
    )
    freeze_after: int = Field(3, ge=1, le=1000)


class Limits(BaseModel):
    """An agent's budgets (calls and cost units; per UTC day and per task) and rate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    calls_per_minute: int | None = Field(None, gt=0, description="All tools together.")
    calls_per_day: int | None = Field(None, ge=0)
    cost_per_day: int | None = Field(None, ge=0)
    calls_per_task: int | None = Field(None, ge=0)
    cost_per_task: int | None = Field(None, ge=0)
    loop: LoopGuard = Field(default_factory=LoopGuard)


class ApprovalCondition(BaseModel):
    """Approval only when the arguments match: a mapping (all rules hold) or a list of
    mappings (any one of them holds), e.g. ``when: { amount: { above: "1000.00" } }``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    when: dict[ArgumentPath, Constraint] | list[dict[ArgumentPath, Constraint]]

    @property
    def alternatives(self) -> list[dict[str, Constraint]]:
        """The conditions, any of which asks for approval."""
        return self.when if isinstance(self.when, list) else [self.when]


class Grant(BaseModel):
    """Permission to call one ``tool.action`` (or every read of a tool with ``tool.*``), with
    optional argument constraints and when a human must approve."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tool: str = Field(description="tool.action, or tool.* for all of a tool's reads.")
    description: str = ""
    where: dict[ArgumentPath, Constraint] = Field(
        default_factory=dict, description="Argument -> rules its value must meet."
    )
    approval: Literal["required", "never"] | ApprovalCondition | None = Field(
        None,
        description="required (the default for writes), never (the default for reads), or a "
        "condition: { when: { argument: rules } }.",
    )
    no_approval_because: str = Field(
        "", description="Why a write may run with approval: never (acknowledges the warning)."
    )
    rate_limit: RateLimit | None = Field(
        None, description="This agent's calls of this action: at most requests per period."
    )
    budget: ToolBudget | None = Field(None, description="This agent's daily use of this action.")
    on_taint: Literal["approve", "deny"] = Field(
        "approve",
        description="A write carrying a value that came from untrusted content: ask a human "
        "(approve) or refuse (deny).",
    )

    @field_validator("tool")
    @classmethod
    def _shape(cls, value: str) -> str:
        if not GRANT.match(value):
            raise ValueError(f"'{value}' is not tool.action or tool.*; write e.g. invoices.list")
        return value

    @model_validator(mode="after")
    def _wildcards_are_plain(self) -> Grant:
        if self.is_wildcard and self.where:
            raise ValueError("a wildcard grant takes no where; name the action to constrain it")
        return self

    @property
    def tool_name(self) -> str:
        """The part before the dot."""
        return self.tool.split(".", 1)[0]

    @property
    def action_name(self) -> str:
        """The part after the dot; ``*`` for a wildcard."""
        return self.tool.split(".", 1)[1]

    @property
    def is_wildcard(self) -> bool:
        """True for ``tool.*``."""
        return self.action_name == "*"


SECRET_NAME = r"^[a-z0-9][a-z0-9_.-]{0,127}$"  # noqa: S105 (a name pattern, not a secret)
SecretName = Annotated[str, Field(pattern=SECRET_NAME)]
SlotName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}\.[a-z][a-z0-9_-]{0,62}$")]


class SharedSecret(BaseModel):
    """A secret that more than one agent may use, said out loud: ``{secret: x, shared: true}``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    secret: SecretName
    shared: bool = False


class Policy(BaseModel):
    """Everything one agent may do. Anything not granted here is refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent: str = Field(pattern=AGENT_ID, description="Equal to the file name without .yaml.")
    description: str = ""
    owner: str = Field("", description="Who answers for this agent (a team or a person).")
    keys: list[AgentKey] = Field(default_factory=list)
    grants: list[Grant] = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)
    approvers: list[str] = Field(
        default_factory=list,
        description="Who may decide this agent's calls: Slack user ids, web console user names "
        "(operators with an admin key may decide any call from the command line).",
    )
    slack_channel: str | None = Field(
        None, description="Where this agent's approvals are asked (default: the config's)."
    )
    escalate_after: Duration = Field(
        120.0, description="No decision by then: the agent is told to stop and wait."
    )
    expires_after: Duration = Field(
        86400.0, description="No decision by then: the call is denied (APPROVAL_EXPIRED)."
    )
    taint_window: Duration = Field(
        86400.0,
        description="Untrusted text this agent read in its other tasks within this time also "
        "taints its writes (a new task id does not launder a value); 0 for this task only.",
    )
    credentials: dict[SlotName, SecretName | SharedSecret] = Field(
        default_factory=dict,
        description="tool.slot -> the name of a secret in the broker's store.",
    )

    def secret_for(self, tool: str, slot: str) -> str | None:
        """The secret this agent uses for ``tool``'s ``slot``, or None."""
        entry = self.credentials.get(f"{tool}.{slot}")
        return entry.secret if isinstance(entry, SharedSecret) else entry
