"""The agent SDK: signs every request, sends it, and raises typed errors.

    from broker.client import BrokerClient

    client = BrokerClient.from_key_file("agent.key", "127.0.0.1:50051", broker_id="broker.local")
    with client:
        result = client.call("invoices.list", {"supplier": "ACME"}, task_id="run-1")
        print(result.result)

Every refusal arrives as a ``broker.errors.BrokerError`` subclass carrying the stable ``reason``
(``RateLimited``, ``ToolNotGranted``, ...) and ``retry_after`` where the broker knows one. A
tool's own failure (an upstream 404) raises ``ToolError`` with the tool's answer. A call that
waits for a human is awaited until the policy's escalation time, then ``ApprovalPending`` says
to stop and wait. Nothing that went wrong is ever handed back as a result.
``AsyncBrokerClient`` is the same for asyncio.
"""

from __future__ import annotations

import json
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import grpc
from grpc import aio

from broker import errors, jsonexact
from broker.signing import AgentCredentials
from broker.v1 import broker_pb2 as pb

SERVICE = "/broker.v1.ToolBroker/"
ADMIN_SERVICE = "/broker.v1.Admin/"
_RESPONSES: dict[str, Any] = {
    "Call": pb.CallResult,
    "Await": pb.CallResult,
    "ListTools": pb.ToolList,
}


@dataclass(frozen=True)
class ToolResult:
    """A call's answer: ``result`` is the parsed ``result_json``."""

    call_id: str
    state: str
    result_json: str
    upstream_status: int
    findings: list[pb.Finding] = field(default_factory=list)
    approval_note: str = ""
    untrusted_paths: list[str] = field(default_factory=list)  # outside values: data, not orders

    @property
    def result(self) -> Any:
        """The tool's output, parsed (decimals stay exact)."""
        return jsonexact.loads(self.result_json) if self.result_json else None


class ToolError(Exception):
    """The call reached the tool and the tool failed (an upstream 4xx): ``result`` says how."""

    def __init__(self, result: ToolResult) -> None:
        super().__init__(
            f"the tool failed with status {result.upstream_status} (call {result.call_id})"
        )
        self.result = result


class ApprovalPending(Exception):
    """The call waits for a human and nobody has decided yet: stop and wait. Resume later with
    ``await_call(call_id)``, or by calling again with the same idempotency key (the same
    pending call, never a second approval)."""

    def __init__(self, call_id: str, note: str, escalate_at_ms: int, expires_at_ms: int) -> None:
        super().__init__(f"call {call_id} waits for approval: {note}")
        self.call_id = call_id
        self.note = note
        self.escalate_at_ms = escalate_at_ms
        self.expires_at_ms = expires_at_ms


class _Signer:
    """Builds and signs the envelope for each RPC."""

    def __init__(self, credentials: AgentCredentials, broker_id: str, front: str = "") -> None:
        self.credentials = credentials
        self.broker_id = broker_id
        self.front = front  # set by a front signing for the agent (the MCP front): audited

    def envelope(self) -> pb.Envelope:
        """A fresh envelope for this agent and broker; set its body before signing."""
        envelope = self.credentials.envelope(self.broker_id)
        envelope.front = self.front
        return envelope

    def call(
        self,
        tool: str,
        arguments: Mapping[str, Any] | str | None,
        *,
        idempotency_key: str,
        task_id: str,
        intent: str,
    ) -> pb.SignedRequest:
        if arguments is None:
            text = "{}"
        elif isinstance(arguments, str):
            text = arguments
        else:
            text = jsonexact.dumps(dict(arguments))
        envelope = self.envelope()
        envelope.call.CopyFrom(
            pb.CallRequest(
                tool=tool,
                arguments_json=text,
                idempotency_key=idempotency_key,
                task_id=task_id,
                intent=intent,
            )
        )
        return self.credentials.sign(envelope)

    def list_tools(self) -> pb.SignedRequest:
        envelope = self.envelope()
        envelope.list_tools.SetInParent()
        return self.credentials.sign(envelope)

    def await_call(self, call_id: str, wait_ms: int) -> pb.SignedRequest:
        envelope = self.envelope()
        getattr(envelope, "await").CopyFrom(pb.AwaitRequest(call_id=call_id, wait_ms=wait_ms))
        return self.credentials.sign(envelope)


def _result(message: pb.CallResult) -> ToolResult:
    if message.state == pb.CallResult.PENDING_APPROVAL:
        raise ApprovalPending(
            message.call_id, message.approval_note, message.escalate_at_ms, message.expires_at_ms
        )
    result = ToolResult(
        call_id=message.call_id,
        state=pb.CallResult.State.Name(message.state),
        result_json=message.result_json,
        upstream_status=message.upstream_status,
        findings=list(message.findings),
        approval_note=message.approval_note,
        untrusted_paths=list(message.untrusted_paths),
    )
    if message.state == pb.CallResult.TOOL_ERROR:
        raise ToolError(result)
    return result


# One request of a conversation with the broker: (method, signed request, timeout).
Request = tuple[str, pb.SignedRequest, float | None]
# A conversation: it yields requests, is sent their answers, and returns the call's result.
Conversation = Generator[Request, Any, ToolResult]


class _Session:
    """What both clients share: the signer, the stubs on a channel, and each RPC as a
    conversation (the requests to send and what their answers mean). The blocking client
    drives a conversation with blocking sends, the asyncio client with awaited ones."""

    def __init__(
        self, credentials: AgentCredentials, broker_id: str, timeout: float, front: str = ""
    ) -> None:
        self.signer = _Signer(credentials, broker_id, front)
        self.timeout = timeout

    @staticmethod
    def stubs(channel: Any) -> dict[str, Any]:
        """A stub per ToolBroker method on ``channel`` (grpc's or grpc.aio's)."""
        return {
            method: channel.unary_unary(
                SERVICE + method,
                request_serializer=pb.SignedRequest.SerializeToString,
                response_deserializer=response.FromString,
            )
            for method, response in _RESPONSES.items()
        }

    def call(
        self,
        tool: str,
        arguments: Mapping[str, Any] | str | None,
        *,
        idempotency_key: str,
        task_id: str,
        intent: str,
        timeout: float | None,
        wait_for_approval: bool,
    ) -> Conversation:
        """Call, then (when it waits for a human) Await until the policy's escalation time."""
        signed = self.signer.call(
            tool, arguments, idempotency_key=idempotency_key, task_id=task_id, intent=intent
        )
        try:
            return _result((yield ("Call", signed, timeout)))
        except ApprovalPending as pending:
            if not wait_for_approval:
                raise
            while _waiting_ms(pending) > 0:
                try:
                    return (
                        yield from self.await_call(
                            pending.call_id, min(_waiting_ms(pending), 30_000)
                        )
                    )
                except ApprovalPending as again:
                    pending = again
            raise

    def await_call(self, call_id: str, wait_ms: int) -> Conversation:
        """One Await: the outcome, or ApprovalPending while undecided."""
        signed = self.signer.await_call(call_id, wait_ms)
        return _result((yield ("Await", signed, wait_ms / 1000 + self.timeout)))


class BrokerClient:
    """A blocking client for one agent. Use as a context manager, or call ``close()``."""

    def __init__(
        self,
        target: str,
        credentials: AgentCredentials,
        *,
        broker_id: str,
        timeout: float = 30.0,
        front: str = "",
    ) -> None:
        self._session = _Session(credentials, broker_id, timeout, front)
        self.signer = self._session.signer
        self.timeout = timeout
        self._channel = grpc.insecure_channel(target)
        self._stubs = _Session.stubs(self._channel)

    @classmethod
    def from_key_file(cls, key_file: str | Path, target: str, **kwargs: Any) -> BrokerClient:
        """A client signing with the key file written by ``broker keygen``."""
        return cls(target, AgentCredentials.load(Path(key_file)), **kwargs)

    def call(
        self,
        tool: str,
        arguments: Mapping[str, Any] | str | None = None,
        *,
        idempotency_key: str = "",
        task_id: str = "",
        intent: str = "",
        timeout: float | None = None,
        wait_for_approval: bool = True,
    ) -> ToolResult:
        """Call ``tool`` (``"tool.action"``) with ``arguments`` (a mapping or JSON text). A
        call that needs a human is awaited until the policy's escalate_after; then (or at once
        with ``wait_for_approval=False``) ApprovalPending is raised."""
        return self._run(
            self._session.call(
                tool,
                arguments,
                idempotency_key=idempotency_key,
                task_id=task_id,
                intent=intent,
                timeout=timeout,
                wait_for_approval=wait_for_approval,
            )
        )

    def list_tools(self, timeout: float | None = None) -> list[pb.ToolInfo]:
        """The tool actions this agent may call."""
        return list(self.send("ListTools", self.signer.list_tools(), timeout).tools)

    def await_call(self, call_id: str, wait_ms: int = 30_000) -> ToolResult:
        """Wait for a pending call's outcome; ApprovalPending while it is still undecided."""
        return self._run(self._session.await_call(call_id, wait_ms))

    def send(self, method: str, signed: pb.SignedRequest, timeout: float | None = None) -> Any:
        """Send an already signed request as it is (tools and tests use this to replay)."""
        try:
            return self._stubs[method](signed, timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            raise errors.from_grpc_error(exc) from None

    def _run(self, conversation: Conversation) -> ToolResult:
        try:
            request = next(conversation)
            while True:
                request = conversation.send(self.send(*request))
        except StopIteration as done:
            result: ToolResult = done.value
            return result

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> BrokerClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncBrokerClient:
    """The asyncio twin of ``BrokerClient``. Use ``async with``, or ``await close()``."""

    def __init__(
        self,
        target: str,
        credentials: AgentCredentials,
        *,
        broker_id: str,
        timeout: float = 30.0,
        front: str = "",
    ) -> None:
        self._session = _Session(credentials, broker_id, timeout, front)
        self.signer = self._session.signer
        self.timeout = timeout
        self._channel = aio.insecure_channel(target)
        self._stubs = _Session.stubs(self._channel)

    @classmethod
    def from_key_file(cls, key_file: str | Path, target: str, **kwargs: Any) -> AsyncBrokerClient:
        """A client signing with the key file written by ``broker keygen``."""
        return cls(target, AgentCredentials.load(Path(key_file)), **kwargs)

    async def call(
        self,
        tool: str,
        arguments: Mapping[str, Any] | str | None = None,
        *,
        idempotency_key: str = "",
        task_id: str = "",
        intent: str = "",
        timeout: float | None = None,
        wait_for_approval: bool = True,
    ) -> ToolResult:
        """Call ``tool`` (``"tool.action"``) with ``arguments`` (a mapping or JSON text). A
        call that needs a human is awaited until the policy's escalate_after; then (or at once
        with ``wait_for_approval=False``) ApprovalPending is raised."""
        return await self._run(
            self._session.call(
                tool,
                arguments,
                idempotency_key=idempotency_key,
                task_id=task_id,
                intent=intent,
                timeout=timeout,
                wait_for_approval=wait_for_approval,
            )
        )

    async def list_tools(self, timeout: float | None = None) -> list[pb.ToolInfo]:
        """The tool actions this agent may call."""
        return list((await self.send("ListTools", self.signer.list_tools(), timeout)).tools)

    async def await_call(self, call_id: str, wait_ms: int = 30_000) -> ToolResult:
        """Wait for a pending call's outcome; ApprovalPending while it is still undecided."""
        return await self._run(self._session.await_call(call_id, wait_ms))

    async def send(
        self, method: str, signed: pb.SignedRequest, timeout: float | None = None
    ) -> Any:
        """Send an already signed request as it is."""
        try:
            return await self._stubs[method](signed, timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            raise errors.from_grpc_error(exc) from None

    async def _run(self, conversation: Conversation) -> ToolResult:
        try:
            request = next(conversation)
            while True:
                request = conversation.send(await self.send(*request))
        except StopIteration as done:
            result: ToolResult = done.value
            return result

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close(None)

    async def __aenter__(self) -> AsyncBrokerClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class AdminClient:
    """The operators' client for the admin service (the ``broker`` CLI uses it): signs with an
    admin key, which the broker makes in its data directory on first start."""

    _METHODS: ClassVar[dict[str, Any]] = {
        "Freeze": pb.AdminResult,
        "Unfreeze": pb.AdminResult,
        "ListApprovals": pb.ApprovalList,
        "Decide": pb.AdminResult,
        "Reconcile": pb.AdminResult,
    }

    def __init__(
        self, target: str, credentials: AgentCredentials, *, broker_id: str, timeout: float = 30.0
    ) -> None:
        self.credentials = credentials
        self.broker_id = broker_id
        self.timeout = timeout
        self._channel = grpc.insecure_channel(target)
        self._stubs = {
            method: self._channel.unary_unary(
                ADMIN_SERVICE + method,
                request_serializer=pb.SignedRequest.SerializeToString,
                response_deserializer=response.FromString,
            )
            for method, response in self._METHODS.items()
        }

    def freeze(self, agent: str = "", *, everyone: bool = False, reason: str = "") -> str:
        """Freeze one agent, or every agent; cancels their pending calls."""
        envelope = self.credentials.envelope(self.broker_id)
        envelope.freeze.CopyFrom(pb.FreezeRequest(agent=agent, all=everyone, reason=reason))
        return str(self._send("Freeze", envelope).message)

    def unfreeze(self, agent: str = "", *, everyone: bool = False, reason: str = "") -> str:
        """Lift a freeze."""
        envelope = self.credentials.envelope(self.broker_id)
        envelope.unfreeze.CopyFrom(pb.UnfreezeRequest(agent=agent, all=everyone, reason=reason))
        return str(self._send("Unfreeze", envelope).message)

    def list_approvals(self, include_decided: bool = False) -> list[pb.PendingCall]:
        """Calls waiting for a human (and those whose outcome is unknown)."""
        envelope = self.credentials.envelope(self.broker_id)
        envelope.list_approvals.CopyFrom(pb.ListApprovalsRequest(include_decided=include_decided))
        return list(self._send("ListApprovals", envelope).calls)

    def decide(self, call_id: str, approve: bool, reason: str = "") -> str:
        """Approve or deny a pending call."""
        envelope = self.credentials.envelope(self.broker_id)
        envelope.decide.CopyFrom(pb.DecideRequest(call_id=call_id, approve=approve, reason=reason))
        return str(self._send("Decide", envelope).message)

    def reconcile(self, call_id: str, note: str) -> str:
        """Record what a human found about a write whose outcome was lost."""
        envelope = self.credentials.envelope(self.broker_id)
        envelope.reconcile.CopyFrom(pb.ReconcileRequest(call_id=call_id, note=note))
        return str(self._send("Reconcile", envelope).message)

    def _send(self, method: str, envelope: pb.Envelope) -> Any:
        try:
            return self._stubs[method](self.credentials.sign(envelope), timeout=self.timeout)
        except grpc.RpcError as exc:
            raise errors.from_grpc_error(exc) from None

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _waiting_ms(pending: ApprovalPending) -> int:
    return pending.escalate_at_ms - time.time_ns() // 1_000_000


def pretty(result: ToolResult) -> str:
    """The result as indented JSON, for people."""
    try:
        return json.dumps(json.loads(result.result_json), indent=2, ensure_ascii=False)
    except ValueError:
        return result.result_json
