"""The agent SDK: signs every request, sends it, and raises typed errors.

    from broker.client import BrokerClient

    client = BrokerClient.from_key_file("agent.key", "127.0.0.1:50051", broker_id="broker.local")
    with client:
        result = client.call("invoices.list", {"supplier": "ACME"}, task_id="run-1")
        print(result.result)

Every refusal arrives as a ``broker.errors.BrokerError`` subclass carrying the stable ``reason``
(``RateLimited``, ``ToolNotGranted``, ...) and ``retry_after`` where the broker knows one. A
tool's own failure (an upstream 404) raises ``ToolError`` with the tool's answer. Nothing that
went wrong is ever handed back as a result. ``AsyncBrokerClient`` is the same for asyncio.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from grpc import aio

from broker import errors, jsonexact
from broker.identity import AgentCredentials
from broker.v1 import broker_pb2 as pb

SERVICE = "/broker.v1.ToolBroker/"
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


class _Signer:
    """Builds and signs the envelope for each RPC."""

    def __init__(self, credentials: AgentCredentials, broker_id: str) -> None:
        self.credentials = credentials
        self.broker_id = broker_id

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
        envelope = self.credentials.envelope(self.broker_id)
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
        envelope = self.credentials.envelope(self.broker_id)
        envelope.list_tools.SetInParent()
        return self.credentials.sign(envelope)

    def await_call(self, call_id: str, wait_ms: int) -> pb.SignedRequest:
        envelope = self.credentials.envelope(self.broker_id)
        getattr(envelope, "await").CopyFrom(pb.AwaitRequest(call_id=call_id, wait_ms=wait_ms))
        return self.credentials.sign(envelope)


def _result(message: pb.CallResult) -> ToolResult:
    result = ToolResult(
        call_id=message.call_id,
        state=pb.CallResult.State.Name(message.state),
        result_json=message.result_json,
        upstream_status=message.upstream_status,
        findings=list(message.findings),
        approval_note=message.approval_note,
    )
    if message.state == pb.CallResult.TOOL_ERROR:
        raise ToolError(result)
    return result


class BrokerClient:
    """A blocking client for one agent. Use as a context manager, or call ``close()``."""

    def __init__(
        self,
        target: str,
        credentials: AgentCredentials,
        *,
        broker_id: str,
        timeout: float = 30.0,
    ) -> None:
        self.signer = _Signer(credentials, broker_id)
        self.timeout = timeout
        self._channel = grpc.insecure_channel(target)
        self._stubs = {
            method: self._channel.unary_unary(
                SERVICE + method,
                request_serializer=pb.SignedRequest.SerializeToString,
                response_deserializer=response.FromString,
            )
            for method, response in _RESPONSES.items()
        }

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
    ) -> ToolResult:
        """Call ``tool`` (``"tool.action"``) with ``arguments`` (a mapping or JSON text)."""
        signed = self.signer.call(
            tool, arguments, idempotency_key=idempotency_key, task_id=task_id, intent=intent
        )
        return _result(self.send("Call", signed, timeout))

    def list_tools(self, timeout: float | None = None) -> list[pb.ToolInfo]:
        """The tool actions this agent may call."""
        return list(self.send("ListTools", self.signer.list_tools(), timeout).tools)

    def await_call(self, call_id: str, wait_ms: int = 30_000) -> ToolResult:
        """Wait for a pending call's outcome."""
        timeout = wait_ms / 1000 + self.timeout
        return _result(self.send("Await", self.signer.await_call(call_id, wait_ms), timeout))

    def send(self, method: str, signed: pb.SignedRequest, timeout: float | None = None) -> Any:
        """Send an already signed request as it is (tools and tests use this to replay)."""
        try:
            return self._stubs[method](signed, timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            raise errors.from_grpc_error(exc) from None

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
    ) -> None:
        self.signer = _Signer(credentials, broker_id)
        self.timeout = timeout
        self._channel = aio.insecure_channel(target)
        self._stubs = {
            method: self._channel.unary_unary(
                SERVICE + method,
                request_serializer=pb.SignedRequest.SerializeToString,
                response_deserializer=response.FromString,
            )
            for method, response in _RESPONSES.items()
        }

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
    ) -> ToolResult:
        """Call ``tool`` (``"tool.action"``) with ``arguments`` (a mapping or JSON text)."""
        signed = self.signer.call(
            tool, arguments, idempotency_key=idempotency_key, task_id=task_id, intent=intent
        )
        return _result(await self.send("Call", signed, timeout))

    async def list_tools(self, timeout: float | None = None) -> list[pb.ToolInfo]:
        """The tool actions this agent may call."""
        return list((await self.send("ListTools", self.signer.list_tools(), timeout)).tools)

    async def await_call(self, call_id: str, wait_ms: int = 30_000) -> ToolResult:
        """Wait for a pending call's outcome."""
        timeout = wait_ms / 1000 + self.timeout
        signed = self.signer.await_call(call_id, wait_ms)
        return _result(await self.send("Await", signed, timeout))

    async def send(
        self, method: str, signed: pb.SignedRequest, timeout: float | None = None
    ) -> Any:
        """Send an already signed request as it is."""
        try:
            return await self._stubs[method](signed, timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            raise errors.from_grpc_error(exc) from None

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close(None)

    async def __aenter__(self) -> AsyncBrokerClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def pretty(result: ToolResult) -> str:
    """The result as indented JSON, for people."""
    try:
        return json.dumps(json.loads(result.result_json), indent=2, ensure_ascii=False)
    except ValueError:
        return result.result_json
