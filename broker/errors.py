"""Every error the broker returns, in one tree.

Agents program against ``reason``; these strings are part of the wire contract and stay stable.
Each class knows its gRPC code and its reason; the server turns any of them into a gRPC status
(with ``google.rpc.ErrorInfo`` and, where a delay is known, ``google.rpc.RetryInfo``) in one
place, and the SDK turns that status back into the same class.

    BrokerError
    ├── Unauthenticated                      UNAUTHENTICATED
    │   ├── BadSignature                     BAD_SIGNATURE
    │   ├── UnknownKey                       UNKNOWN_KEY
    │   ├── KeyRevoked                       KEY_REVOKED
    │   ├── WrongAudience                    WRONG_AUDIENCE
    │   ├── MethodMismatch                   METHOD_MISMATCH
    │   ├── StaleRequest                     STALE_REQUEST
    │   ├── ReplayedNonce                    REPLAYED_NONCE
    │   └── MalformedEnvelope                MALFORMED_ENVELOPE
    ├── PermissionDenied                     PERMISSION_DENIED
    │   ├── AgentFrozen                      AGENT_FROZEN
    │   ├── ToolNotGranted                   TOOL_NOT_GRANTED
    │   ├── ArgumentNotAllowed               ARGUMENT_NOT_ALLOWED
    │   ├── ApprovalDenied                   APPROVAL_DENIED
    │   └── ApprovalExpired                  APPROVAL_EXPIRED
    ├── NotFound                             NOT_FOUND
    │   ├── UnknownTool                      UNKNOWN_TOOL
    │   └── UnknownCall                      UNKNOWN_CALL
    ├── InvalidArgument                      INVALID_ARGUMENT
    │   ├── InvalidArguments                 INVALID_ARGUMENTS
    │   └── IdempotencyKeyRequired           IDEMPOTENCY_KEY_REQUIRED
    ├── ResourceExhausted                    RESOURCE_EXHAUSTED
    │   ├── RateLimited                      RATE_LIMITED
    │   ├── UpstreamRateLimited              UPSTREAM_RATE_LIMITED
    │   ├── BudgetExceeded                   BUDGET_EXCEEDED
    │   └── LoopDetected                     LOOP_DETECTED
    ├── FailedPrecondition                   FAILED_PRECONDITION
    │   ├── IdempotencyKeyReused             IDEMPOTENCY_KEY_REUSED
    │   ├── SandboxUnavailable               SANDBOX_UNAVAILABLE
    │   ├── Sealed                           SEALED
    │   ├── SecretNotSet                     SECRET_NOT_SET
    │   ├── AlreadyDecided                   ALREADY_DECIDED
    │   └── UpstreamAddressRefused           UPSTREAM_ADDRESS_REFUSED (private address, not allowed)
    ├── Aborted                              ABORTED
    │   └── CallInProgress                   CALL_IN_PROGRESS
    ├── Unavailable                          UNAVAILABLE
    │   ├── UpstreamUnavailable              UPSTREAM_UNAVAILABLE
    │   ├── AuditUnavailable                 AUDIT_UNAVAILABLE
    │   └── StoreUnavailable                 STORE_UNAVAILABLE
    ├── DeadlineExceeded                     DEADLINE_EXCEEDED
    │   └── UpstreamTimeout                  UPSTREAM_TIMEOUT
    ├── Unknown                              UNKNOWN
    │   └── OutcomeUnknown                   OUTCOME_UNKNOWN
    └── Internal                             INTERNAL
        └── InternalError                    INTERNAL_ERROR (a bug: the message names the call_id)

Separate from the wire tree, ``ConfigError`` is raised when a config, policy or tool file is
wrong; it carries the file, line and column.
"""

from __future__ import annotations

import math
from typing import ClassVar

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "toolbroker"


class BrokerError(Exception):
    """Base of every error the broker sends; ``message`` says what was wrong and what to do."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN
    reason: ClassVar[str] = ""
    _by_reason: ClassVar[dict[str, type[BrokerError]]] = {}

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status_code: grpc.StatusCode | None = None,
        call_id: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.call_id = call_id  # the audit id of the refused call, when the broker sent one
        self.final = False  # True: retrying inside the broker cannot help (an open circuit)
        # The code seen on the wire; differs from ``code`` only for errors this tree has no
        # class for (CANCELLED, UNIMPLEMENTED, a transport failure seen by the SDK).
        self.status_code = status_code or self.code

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.reason:
            BrokerError._by_reason[cls.reason] = cls

    @classmethod
    def for_reason(cls, reason: str) -> type[BrokerError] | None:
        """The class that carries ``reason``, or None for a reason this version does not know."""
        return cls._by_reason.get(reason)

    def __str__(self) -> str:
        return f"{self.reason or self.status_code.name}: {self.message}"


class Unauthenticated(BrokerError):
    """The request could not be tied to a known, current agent key."""

    code = grpc.StatusCode.UNAUTHENTICATED


class BadSignature(Unauthenticated):
    reason = "BAD_SIGNATURE"


class UnknownKey(Unauthenticated):
    reason = "UNKNOWN_KEY"


class KeyRevoked(Unauthenticated):
    reason = "KEY_REVOKED"


class WrongAudience(Unauthenticated):
    reason = "WRONG_AUDIENCE"


class MethodMismatch(Unauthenticated):
    reason = "METHOD_MISMATCH"


class StaleRequest(Unauthenticated):
    reason = "STALE_REQUEST"


class ReplayedNonce(Unauthenticated):
    reason = "REPLAYED_NONCE"


class MalformedEnvelope(Unauthenticated):
    reason = "MALFORMED_ENVELOPE"


class PermissionDenied(BrokerError):
    """The agent is known, but this call is not allowed."""

    code = grpc.StatusCode.PERMISSION_DENIED


class AgentFrozen(PermissionDenied):
    reason = "AGENT_FROZEN"


class ToolNotGranted(PermissionDenied):
    reason = "TOOL_NOT_GRANTED"


class ArgumentNotAllowed(PermissionDenied):
    reason = "ARGUMENT_NOT_ALLOWED"


class ApprovalDenied(PermissionDenied):
    reason = "APPROVAL_DENIED"


class ApprovalExpired(PermissionDenied):
    reason = "APPROVAL_EXPIRED"


class NotFound(BrokerError):
    """The named tool or call does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class UnknownTool(NotFound):
    reason = "UNKNOWN_TOOL"


class UnknownCall(NotFound):
    reason = "UNKNOWN_CALL"


class InvalidArgument(BrokerError):
    """The request is well signed but its content is wrong; fix it before sending again."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class InvalidArguments(InvalidArgument):
    reason = "INVALID_ARGUMENTS"


class IdempotencyKeyRequired(InvalidArgument):
    reason = "IDEMPOTENCY_KEY_REQUIRED"


class ResourceExhausted(BrokerError):
    """A limit was reached; ``retry_after`` (seconds) says when trying again makes sense."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class RateLimited(ResourceExhausted):
    reason = "RATE_LIMITED"


class UpstreamRateLimited(ResourceExhausted):
    reason = "UPSTREAM_RATE_LIMITED"


class BudgetExceeded(ResourceExhausted):
    reason = "BUDGET_EXCEEDED"


class LoopDetected(ResourceExhausted):
    reason = "LOOP_DETECTED"


class FailedPrecondition(BrokerError):
    """The broker is not in a state to run this call; retrying unchanged will not help."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class IdempotencyKeyReused(FailedPrecondition):
    reason = "IDEMPOTENCY_KEY_REUSED"


class SandboxUnavailable(FailedPrecondition):
    reason = "SANDBOX_UNAVAILABLE"


class Sealed(FailedPrecondition):
    reason = "SEALED"


class SecretNotSet(FailedPrecondition):
    reason = "SECRET_NOT_SET"


class AlreadyDecided(FailedPrecondition):
    reason = "ALREADY_DECIDED"


class UpstreamAddressRefused(FailedPrecondition):
    reason = "UPSTREAM_ADDRESS_REFUSED"


class Aborted(BrokerError):
    """Another call with the same idempotency key is still running."""

    code = grpc.StatusCode.ABORTED


class CallInProgress(Aborted):
    reason = "CALL_IN_PROGRESS"


class Unavailable(BrokerError):
    """Something the call needs is down; the call did not complete."""

    code = grpc.StatusCode.UNAVAILABLE


class UpstreamUnavailable(Unavailable):
    reason = "UPSTREAM_UNAVAILABLE"


class AuditUnavailable(Unavailable):
    reason = "AUDIT_UNAVAILABLE"


class StoreUnavailable(Unavailable):
    """The database of the broker's state (PostgreSQL, for replicas) did not answer."""

    reason = "STORE_UNAVAILABLE"


class DeadlineExceeded(BrokerError):
    """The call ran out of time."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class UpstreamTimeout(DeadlineExceeded):
    reason = "UPSTREAM_TIMEOUT"


class Unknown(BrokerError):
    """The outcome cannot be known; nothing will be re-executed blindly."""

    code = grpc.StatusCode.UNKNOWN


class OutcomeUnknown(Unknown):
    reason = "OUTCOME_UNKNOWN"


class Internal(BrokerError):
    """A bug in the broker; the message names the call so an operator can find it in the log."""

    code = grpc.StatusCode.INTERNAL


class InternalError(Internal):
    reason = "INTERNAL_ERROR"


class ConfigError(Exception):
    """A config, policy or tool file is wrong: where, and what to write instead."""

    def __init__(self, path: str, message: str, line: int | None = None, column: int | None = None):
        self.path = path
        self.line = line
        self.column = column
        self.message = message
        where = path if line is None else f"{path}:{line}:{column or 1}"
        super().__init__(f"{where}: {message}")


def to_grpc_status(error: BrokerError, call_id: str = "") -> grpc.Status:
    """The status the server sends: code, message, ErrorInfo (with the call_id in its metadata)
    and, where known, RetryInfo."""
    details = status_pb2.Status(code=error.status_code.value[0], message=error.message)
    info = error_details_pb2.ErrorInfo(domain=DOMAIN, reason=error.reason)
    if call_id:
        info.metadata["call_id"] = call_id
    details.details.add().Pack(info)
    if error.retry_after is not None:
        seconds = max(0.0, error.retry_after)
        whole = math.floor(seconds)
        delay = duration_pb2.Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))
        details.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return rpc_status.to_status(details)


def from_grpc_error(error: grpc.RpcError) -> BrokerError:
    """The typed error for a failed RPC; a failure without a broker reason (the transport, an
    older broker) becomes the class for its code."""
    code: grpc.StatusCode = error.code()
    message: str = error.details() or code.name
    reason = ""
    call_id = ""
    retry_after: float | None = None
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                if info.domain == DOMAIN:
                    reason = info.reason
                    call_id = info.metadata.get("call_id", "")
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                retry_after = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
    cls = BrokerError.for_reason(reason) or _BY_CODE.get(code, BrokerError)
    return cls(message, retry_after=retry_after, status_code=code, call_id=call_id)


_BY_CODE: dict[grpc.StatusCode, type[BrokerError]] = {
    cls.code: cls
    for cls in (
        Unauthenticated,
        PermissionDenied,
        NotFound,
        InvalidArgument,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        Unavailable,
        DeadlineExceeded,
        Unknown,
        Internal,
    )
}
