"""The path of a request: one Stage interface, and the order of the stages as data.

Every stage is ``async def __call__(call, call_next) -> Outcome``. A stage refuses by raising a
``BrokerError`` before it calls ``call_next``; it may also look at (or change) the outcome on
the way back. ``audit`` is outermost, so every outcome, refusals included, gets a record.
Reordering the stages is a one-line change to the tuples below.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from broker import errors
from broker.identity import Verified
from broker.manifest import ToolAction
from broker.policy import GrantRef
from broker.secrets import Injected
from broker.snapshot import Snapshot
from broker.store import CallRecord
from broker.untrusted import TaintedValue
from broker.v1 import broker_pb2 as pb

Rpc = Literal[
    "call", "await", "list_tools", "freeze", "unfreeze", "list_approvals", "decide", "reconcile"
]

# The order, outermost first. Names are keys of the stage factories given to build_pipeline.
CALL_STAGES: tuple[str, ...] = (
    "audit",
    "verify",
    "received",
    "freeze",
    "grant",
    "validate",
    "constrain",
    "idempotency",  # before budgets and limits: a retry answered from the store costs nothing
    "loops",
    "budget",
    "ratelimit",
    "confirm",
    "decided",
    "journal",
    "redact",
    "untrusted",
    "retry",
    "circuit",
    "execute",
)
LIST_TOOLS_STAGES: tuple[str, ...] = ("audit", "verify", "freeze", "list_tools")
AWAIT_STAGES: tuple[str, ...] = ("audit", "verify", "freeze", "await")
# An approved call, run once by the approvals service: the policy is asked again (it may have
# changed), the digest must still match, then it runs like any call.
APPROVED_STAGES: tuple[str, ...] = (
    "audit",
    "grant",
    "validate",
    "constrain",
    "decided",
    "journal",
    "redact",
    "untrusted",
    "retry",
    "circuit",
    "execute",
)
ADMIN_STAGES: tuple[str, ...] = ("audit", "verify_admin", "admin")


@dataclass
class Outcome:
    """What a request produced, before it becomes a protobuf message."""

    state: int = pb.CallResult.DONE
    result_json: str = ""
    upstream_status: int = 0
    findings: list[pb.Finding] = field(default_factory=list)
    approval_note: str = ""
    escalate_at_ms: int = 0
    expires_at_ms: int = 0
    call_id: str = ""  # set when the answer belongs to an earlier call (idempotent retry, Await)
    upstream_rest: float = 0.0  # seconds the upstream asked every caller to wait (rate headers)
    untrusted_paths: list[str] = field(default_factory=list)  # outside values in result_json
    tools: list[pb.ToolInfo] | None = None  # ListTools only
    reply: Any = None  # the admin service's answer message


@dataclass
class Call:
    """One request on its way through the stages; each stage fills in what it learns."""

    rpc: Rpc
    signed: pb.SignedRequest
    snapshot: Snapshot  # the policies and tools in force for the whole of this request
    deadline: float | None = None  # time.monotonic() by which the caller stops waiting
    call_id: str = field(default_factory=lambda: new_call_id())
    started_ns: int = field(default_factory=time.perf_counter_ns)
    verified: Verified | None = None
    action: ToolAction | None = None
    grant: GrantRef | None = None
    arguments: dict[str, Any] | None = None
    args_digest: str = ""
    digest: str = ""  # binds an approval to what will execute (agent, tool, arguments, secrets)
    record: CallRecord | None = None  # the stored call an approval or a retry refers to
    tainted: list[TaintedValue] = field(default_factory=list)  # outside values of this task
    credentials: list[Injected] = field(default_factory=list)  # what execute put in
    received: asyncio.Future[None] | None = None  # the commit of its "received" audit record

    @property
    def agent(self) -> str:
        """The verified agent ("" before verify has run)."""
        return self.verified.agent if self.verified else ""

    @property
    def request(self) -> pb.CallRequest:
        """The CallRequest body (empty until verify has run, or for other RPCs)."""
        if self.verified is None or self.rpc != "call":
            return pb.CallRequest()
        return self.verified.envelope.call

    def time_left(self) -> float | None:
        """Seconds the work may still take so that the answer reaches the caller before its
        deadline (a small margin is kept for the way back); None when it set no deadline."""
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        return left - min(0.25, max(0.02, 0.1 * left))


def new_call_id() -> str:
    """Time-ordered and unguessable: ``c`` + 12 hex digits of milliseconds + 16 random hex."""
    return f"c{time.time_ns() // 1_000_000:012x}{secrets.token_hex(8)}"


Handler = Callable[[Call], Awaitable[Outcome]]


class Stage(Protocol):
    """One step on a request's path."""

    async def __call__(self, call: Call, call_next: Handler) -> Outcome: ...


async def _end_of_pipeline(call: Call) -> Outcome:
    raise errors.InternalError(f"call {call.call_id} reached the end of the pipeline unhandled")


Timer = Callable[[str, float], None]


def build_pipeline(
    order: Sequence[str], stages: Mapping[str, Stage], timer: Timer | None = None
) -> Handler:
    """Chain the named stages, the first outermost; the last one must answer without
    calling on. ``timer(stage, seconds)`` hears how long each stage took (the stages after
    it included)."""
    handler: Handler = _end_of_pipeline
    for name in reversed(order):
        handler = _bind(name, stages[name], handler, timer)
    return handler


def _bind(name: str, stage: Stage, call_next: Handler, timer: Timer | None) -> Handler:
    if timer is None:

        async def handle(call: Call) -> Outcome:
            return await stage(call, call_next)

        return handle

    async def timed(call: Call) -> Outcome:
        began = time.perf_counter()
        try:
            return await stage(call, call_next)
        finally:
            timer(name, time.perf_counter() - began)

    return timed
