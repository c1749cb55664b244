"""The path of a request: one Stage interface, and the order of the stages as data.

Every stage is ``async def __call__(call, call_next) -> Outcome``. A stage refuses by raising a
``BrokerError`` before it calls ``call_next``; it may also look at (or change) the outcome on
the way back. ``audit`` is outermost, so every outcome, refusals included, gets a record.
Reordering the stages is a one-line change to the tuples below.

Each stage says which parts of the ``Call`` it reads (``needs``) and which it fills in
(``provides``); ``build_pipeline`` refuses an order in which a stage would read a part that no
stage before it provides. Reading such a part anyway is an InternalError naming it, never a
silent ``None``.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, Literal, Protocol, TypeVar, overload

from broker import errors
from broker.identity import Verified
from broker.manifest import ToolAction
from broker.outcome import Outcome as Outcome  # what a stage returns, named here too
from broker.policy import GrantRef
from broker.snapshot import Snapshot
from broker.storage.records import CallRecord
from broker.untrusted import TaintedValue
from broker.v1 import broker_pb2 as pb
from broker.vault import Injected

T = TypeVar("T")
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
    "provenance",
    "redact",
    "untrusted",
    "retry",
    "circuit",
    "execute",
)
LIST_TOOLS_STAGES: tuple[str, ...] = ("audit", "verify", "freeze", "list_tools")
AWAIT_STAGES: tuple[str, ...] = ("audit", "verify", "freeze", "await")
# An approved call, run once by the approvals service: a freeze since the approval stops it,
# the policy is asked again (it may have changed), the digest must still match (journal),
# then it runs like any call.
APPROVED_STAGES: tuple[str, ...] = (
    "audit",
    "freeze",
    "grant",
    "validate",
    "constrain",
    "decided",
    "journal",
    "provenance",
    "redact",
    "untrusted",
    "retry",
    "circuit",
    "execute",
)
APPROVED_GIVEN = frozenset({"verified", "record"})  # rebuilt from the stored call
ADMIN_STAGES: tuple[str, ...] = ("audit", "verify_admin", "admin")


class Provided(Generic[T]):
    """A part of a Call that a stage fills in. Read before that, it is an InternalError that
    names it (a stage order ``build_pipeline`` would have refused), not a ``None``."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, call: None, owner: type) -> Provided[T]: ...

    @overload
    def __get__(self, call: Call, owner: type) -> T: ...

    def __get__(self, call: Call | None, owner: type) -> T | Provided[T]:
        if call is None:
            return self
        try:
            value: T = call.__dict__[self.name]
        except KeyError:
            raise errors.InternalError(
                f"call {call.call_id}: '{self.name}' was read before a stage provided it"
            ) from None
        return value

    def __set__(self, call: Call, value: T) -> None:
        call.__dict__[self.name] = value


class Call:
    """One request on its way through the stages; each stage fills in what it learns."""

    verified = Provided[Verified]()  # verify: who signed, and the envelope
    action = Provided[ToolAction]()  # grant: the tool action called
    grant = Provided[GrantRef]()  # grant: the policy's grant that allows it
    arguments = Provided[dict[str, Any]]()  # validate: the arguments, parsed and checked
    record = Provided[CallRecord]()  # the stored call an approval refers to

    def __init__(
        self,
        rpc: Rpc,
        signed: pb.SignedRequest,
        snapshot: Snapshot,
        deadline: float | None = None,
        *,
        call_id: str | None = None,
    ) -> None:
        self.rpc = rpc
        self.signed = signed
        self.snapshot = snapshot  # the policies and tools in force for the whole of this request
        self.deadline = deadline  # time.monotonic() by which the caller stops waiting
        self.call_id = call_id or new_call_id()
        self.started_ns = time.perf_counter_ns()
        self.args_digest = ""  # validate: the arguments' digest
        self.digest = ""  # binds an approval to what will execute (agent, tool, arguments, secrets)
        self.tainted: list[TaintedValue] = []  # outside values of this task (confirm)
        self.credentials: list[Injected] = []  # what execute put in
        self.received: asyncio.Future[None] | None = None  # the commit of its "received" record

    def has(self, part: str) -> bool:
        """True once a stage has provided ``part`` (one of PARTS)."""
        return part in self.__dict__

    @property
    def agent(self) -> str:
        """The verified agent ("" before verify has run)."""
        return self.verified.agent if self.has("verified") else ""

    @property
    def request(self) -> pb.CallRequest:
        """The CallRequest body (empty until verify has run, or for other RPCs)."""
        if self.rpc != "call" or not self.has("verified"):
            return pb.CallRequest()
        return self.verified.envelope.call

    def time_left(self) -> float | None:
        """Seconds the work may still take so that the answer reaches the caller before its
        deadline (a small margin is kept for the way back); None when it set no deadline."""
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        return left - min(0.25, max(0.02, 0.1 * left))


PARTS = frozenset(name for name, value in vars(Call).items() if isinstance(value, Provided))


def new_call_id() -> str:
    """Time-ordered and unguessable: ``c`` + 12 hex digits of milliseconds + 16 random hex."""
    return f"c{time.time_ns() // 1_000_000:012x}{secrets.token_hex(8)}"


Handler = Callable[[Call], Awaitable[Outcome]]


class Stage(Protocol):
    """One step on a request's path, and the parts of the Call it reads and fills in."""

    needs: frozenset[str]
    provides: frozenset[str]

    async def __call__(self, call: Call, call_next: Handler) -> Outcome: ...


class StageOrderError(ValueError):
    """A pipeline whose stages are not in an order that works (a stage before the one that
    provides what it needs, or a stage that is not there)."""


async def _end_of_pipeline(call: Call) -> Outcome:
    raise errors.InternalError(f"call {call.call_id} reached the end of the pipeline unhandled")


Timer = Callable[[str, float], None]


def check_order(
    order: Sequence[str], stages: Mapping[str, Stage], given: Iterable[str] = ()
) -> None:
    """StageOrderError unless every stage in ``order`` exists and comes after the stages
    providing what it needs (``given``: parts the caller fills in before the first stage)."""
    available = set(given)
    for name in order:
        stage = stages.get(name)
        if stage is None:
            raise StageOrderError(f"no stage named '{name}'")
        unknown = (stage.needs | stage.provides) - PARTS
        if unknown:
            raise StageOrderError(f"stage '{name}' names parts a Call does not have: {unknown}")
        missing = stage.needs - available
        if missing:
            raise StageOrderError(
                f"stage '{name}' needs {', '.join(sorted(missing))}, which no stage before it "
                "provides; move it after the stage that does"
            )
        available |= stage.provides


def build_pipeline(
    order: Sequence[str],
    stages: Mapping[str, Stage],
    timer: Timer | None = None,
    *,
    given: Iterable[str] = (),
) -> Handler:
    """Chain the named stages, the first outermost; the last one must answer without
    calling on. ``timer(stage, seconds)`` hears how long each stage took (the stages after
    it included). StageOrderError when the order breaks a stage's ``needs``."""
    check_order(order, stages, given)
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
