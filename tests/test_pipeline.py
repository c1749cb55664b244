"""The stage orders as data: each list the broker serves keeps every stage after the stages
that provide what it reads, and an order that breaks that is refused when it is built."""

from __future__ import annotations

from typing import Any

import pytest

from broker import errors
from broker.approvals.admin import AdminStage
from broker.pipeline import (
    ADMIN_STAGES,
    APPROVED_GIVEN,
    APPROVED_STAGES,
    AWAIT_STAGES,
    CALL_STAGES,
    LIST_TOOLS_STAGES,
    Call,
    StageOrderError,
    build_pipeline,
)
from broker.stages.audit_records import AuditStage, DecidedStage, ReceivedStage
from broker.stages.await_call import AwaitStage
from broker.stages.budget import BudgetStage
from broker.stages.circuit import CircuitStage
from broker.stages.confirm import ConfirmStage
from broker.stages.constrain import ConstrainStage
from broker.stages.execute import ExecuteStage
from broker.stages.freeze import FreezeStage
from broker.stages.grant import GrantStage
from broker.stages.idempotency import IdempotencyStage
from broker.stages.journal import JournalStage
from broker.stages.list_tools import ListToolsStage
from broker.stages.loops import LoopStage
from broker.stages.provenance import ProvenanceStage
from broker.stages.ratelimit import RateLimitStage
from broker.stages.redact import RedactStage
from broker.stages.retry import RetryStage
from broker.stages.untrusted_output import UntrustedStage
from broker.stages.validate import ValidateStage
from broker.stages.verify import VerifyStage
from broker.v1 import broker_pb2 as pb

# What each stage declares is on its class: the order can be checked without building one.
STAGES: dict[str, Any] = {
    "audit": AuditStage,
    "verify": VerifyStage,
    "verify_admin": VerifyStage,
    "received": ReceivedStage,
    "freeze": FreezeStage,
    "grant": GrantStage,
    "validate": ValidateStage,
    "constrain": ConstrainStage,
    "idempotency": IdempotencyStage,
    "loops": LoopStage,
    "budget": BudgetStage,
    "ratelimit": RateLimitStage,
    "confirm": ConfirmStage,
    "decided": DecidedStage,
    "journal": JournalStage,
    "provenance": ProvenanceStage,
    "redact": RedactStage,
    "untrusted": UntrustedStage,
    "retry": RetryStage,
    "circuit": CircuitStage,
    "execute": ExecuteStage,
    "list_tools": ListToolsStage,
    "await": AwaitStage,
    "admin": AdminStage,
}


@pytest.mark.parametrize(
    ("order", "given"),
    [
        (CALL_STAGES, frozenset()),
        (LIST_TOOLS_STAGES, frozenset()),
        (AWAIT_STAGES, frozenset()),
        (APPROVED_STAGES, APPROVED_GIVEN),
        (ADMIN_STAGES, frozenset()),
    ],
    ids=["call", "list_tools", "await", "approved", "admin"],
)
def test_each_served_order_keeps_every_prerequisite(
    order: tuple[str, ...], given: frozenset[str]
) -> None:
    build_pipeline(order, STAGES, given=given)  # raises StageOrderError otherwise


@pytest.mark.parametrize(
    ("moved", "before", "missing"),
    [
        ("validate", "grant", "action"),
        ("constrain", "validate", "arguments"),
        ("grant", "verify", "verified"),
        ("execute", "validate", "arguments"),
        ("confirm", "grant", "action, arguments, grant"),
    ],
)
def test_an_order_that_breaks_a_prerequisite_is_refused(
    moved: str, before: str, missing: str
) -> None:
    order = [name for name in CALL_STAGES if name != moved]
    order.insert(order.index(before), moved)
    with pytest.raises(StageOrderError, match=f"stage '{moved}' needs {missing}, which no stage"):
        build_pipeline(order, STAGES)


def test_an_approved_call_without_its_stored_record_is_refused() -> None:
    with pytest.raises(StageOrderError, match="'freeze' needs verified"):
        build_pipeline(APPROVED_STAGES, STAGES)


def test_an_unknown_stage_name_is_refused() -> None:
    with pytest.raises(StageOrderError, match="no stage named 'vrify'"):
        build_pipeline(("audit", "vrify", "grant"), STAGES)


def test_a_part_read_before_a_stage_provided_it_names_the_part() -> None:
    call = Call("call", pb.SignedRequest(), snapshot=None)  # type: ignore[arg-type]
    assert call.agent == ""  # the few readers that may run early ask first
    with pytest.raises(errors.InternalError, match="'action' was read before a stage provided it"):
        _ = call.action
