"""Policy tests (``policies/<agent>_test.yaml``): calls and what the policy must answer.

cases:
  - name: a small payment needs no human
    tool: invoices.pay
    arguments: { id: INV-0001, amount: "120.00" }
    expect: allow                       # allow | approval | deny
  - name: a large one is refused
    tool: invoices.pay
    arguments: { id: INV-0001, amount: "9000.00" }
    expect: { deny: ARGUMENT_NOT_ALLOWED }
  - name: an address from an email needs a human
    tool: mail.send
    arguments: { to: mallory@evil.example }
    tainted: [mallory@evil.example]     # values that came from untrusted content
    expect: { approval: tainted }
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from broker.errors import ConfigError
from broker.policy.evaluate import Decision, PolicySet, outside_values
from broker.yamlfile import load_model


class DenyExpectation(BaseModel):
    """``{deny: REASON}``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    deny: str


class ApprovalExpectation(BaseModel):
    """``{approval: why}``: write, condition, tainted or required."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    approval: Literal["write", "condition", "tainted", "required"]


class PolicyCase(BaseModel):
    """One call and the answer the policy must give."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    tainted: list[str] = Field(default_factory=list, description="Values from outside.")
    expect: Literal["allow", "approval", "deny"] | DenyExpectation | ApprovalExpectation

    def matches(self, decision: Decision) -> bool:
        """True when the decision is the expected one."""
        if isinstance(self.expect, str):
            return decision.outcome == self.expect
        if isinstance(self.expect, DenyExpectation):
            return decision.outcome == "deny" and decision.reason == self.expect.deny
        return decision.outcome == "approval" and decision.reason == self.expect.approval

    @property
    def expected(self) -> str:
        """The expectation in words."""
        if isinstance(self.expect, str):
            return self.expect
        if isinstance(self.expect, DenyExpectation):
            return f"deny {self.expect.deny}"
        return f"approval {self.expect.approval}"


class PolicyTestFile(BaseModel):
    """The cases for one agent's policy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent: str | None = Field(None, description="Defaults to the file name without _test.")
    cases: list[PolicyCase] = Field(min_length=1)


@dataclass(frozen=True)
class CaseResult:
    """How one case went."""

    case: PolicyCase
    decision: Decision

    @property
    def passed(self) -> bool:
        """True when the policy answered as expected."""
        return self.case.matches(self.decision)


@dataclass(frozen=True)
class FileResult:
    """The cases of one test file, and the agent's grants no case reached."""

    path: Path
    agent: str
    results: list[CaseResult]
    unexercised: list[str]


def run_test_file(path: Path, policies: PolicySet) -> FileResult:
    """Decide every case of ``path`` under ``policies``."""
    tests = load_model(path, PolicyTestFile)
    agent = tests.agent or path.stem.removesuffix("_test")
    if agent not in policies.policies:
        raise ConfigError(str(path), f"no policy for agent '{agent}' beside this test file")
    results = [
        CaseResult(
            case, policies.decide(agent, case.tool, case.arguments, *outside_values(case.tainted))
        )
        for case in tests.cases
    ]
    reached = {result.decision.rule for result in results}
    unexercised = [
        f"{ref.grant.tool} ({ref.label})"
        for ref in policies.grants()
        if ref.agent == agent and ref.label not in reached
    ]
    return FileResult(path, agent, results, sorted(unexercised))
