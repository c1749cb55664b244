from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SignedRequest(_message.Message):
    __slots__ = ("payload", "key_id", "signature")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    key_id: str
    signature: bytes
    def __init__(self, payload: _Optional[bytes] = ..., key_id: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class Envelope(_message.Message):
    __slots__ = ("agent", "audience", "nonce", "issued_at_ms", "front", "call", "list_tools", "freeze", "unfreeze", "list_approvals", "decide", "reconcile")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    FRONT_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    AWAIT_FIELD_NUMBER: _ClassVar[int]
    LIST_TOOLS_FIELD_NUMBER: _ClassVar[int]
    FREEZE_FIELD_NUMBER: _ClassVar[int]
    UNFREEZE_FIELD_NUMBER: _ClassVar[int]
    LIST_APPROVALS_FIELD_NUMBER: _ClassVar[int]
    DECIDE_FIELD_NUMBER: _ClassVar[int]
    RECONCILE_FIELD_NUMBER: _ClassVar[int]
    agent: str
    audience: str
    nonce: str
    issued_at_ms: int
    front: str
    call: CallRequest
    list_tools: ListToolsRequest
    freeze: FreezeRequest
    unfreeze: UnfreezeRequest
    list_approvals: ListApprovalsRequest
    decide: DecideRequest
    reconcile: ReconcileRequest
    def __init__(self, agent: _Optional[str] = ..., audience: _Optional[str] = ..., nonce: _Optional[str] = ..., issued_at_ms: _Optional[int] = ..., front: _Optional[str] = ..., call: _Optional[_Union[CallRequest, _Mapping]] = ..., list_tools: _Optional[_Union[ListToolsRequest, _Mapping]] = ..., freeze: _Optional[_Union[FreezeRequest, _Mapping]] = ..., unfreeze: _Optional[_Union[UnfreezeRequest, _Mapping]] = ..., list_approvals: _Optional[_Union[ListApprovalsRequest, _Mapping]] = ..., decide: _Optional[_Union[DecideRequest, _Mapping]] = ..., reconcile: _Optional[_Union[ReconcileRequest, _Mapping]] = ..., **kwargs) -> None: ...

class CallRequest(_message.Message):
    __slots__ = ("tool", "arguments_json", "idempotency_key", "task_id", "intent")
    TOOL_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    INTENT_FIELD_NUMBER: _ClassVar[int]
    tool: str
    arguments_json: str
    idempotency_key: str
    task_id: str
    intent: str
    def __init__(self, tool: _Optional[str] = ..., arguments_json: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., task_id: _Optional[str] = ..., intent: _Optional[str] = ...) -> None: ...

class AwaitRequest(_message.Message):
    __slots__ = ("call_id", "wait_ms")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    wait_ms: int
    def __init__(self, call_id: _Optional[str] = ..., wait_ms: _Optional[int] = ...) -> None: ...

class ListToolsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CallResult(_message.Message):
    __slots__ = ("state", "call_id", "result_json", "findings", "upstream_status", "approval_note", "escalate_at_ms", "expires_at_ms", "untrusted_paths")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[CallResult.State]
        DONE: _ClassVar[CallResult.State]
        PENDING_APPROVAL: _ClassVar[CallResult.State]
        TOOL_ERROR: _ClassVar[CallResult.State]
    STATE_UNSPECIFIED: CallResult.State
    DONE: CallResult.State
    PENDING_APPROVAL: CallResult.State
    TOOL_ERROR: CallResult.State
    STATE_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_STATUS_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_NOTE_FIELD_NUMBER: _ClassVar[int]
    ESCALATE_AT_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    UNTRUSTED_PATHS_FIELD_NUMBER: _ClassVar[int]
    state: CallResult.State
    call_id: str
    result_json: str
    findings: _containers.RepeatedCompositeFieldContainer[Finding]
    upstream_status: int
    approval_note: str
    escalate_at_ms: int
    expires_at_ms: int
    untrusted_paths: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, state: _Optional[_Union[CallResult.State, str]] = ..., call_id: _Optional[str] = ..., result_json: _Optional[str] = ..., findings: _Optional[_Iterable[_Union[Finding, _Mapping]]] = ..., upstream_status: _Optional[int] = ..., approval_note: _Optional[str] = ..., escalate_at_ms: _Optional[int] = ..., expires_at_ms: _Optional[int] = ..., untrusted_paths: _Optional[_Iterable[str]] = ...) -> None: ...

class Finding(_message.Message):
    __slots__ = ("kind", "path", "detail")
    KIND_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    kind: str
    path: str
    detail: str
    def __init__(self, kind: _Optional[str] = ..., path: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class ToolList(_message.Message):
    __slots__ = ("tools",)
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    tools: _containers.RepeatedCompositeFieldContainer[ToolInfo]
    def __init__(self, tools: _Optional[_Iterable[_Union[ToolInfo, _Mapping]]] = ...) -> None: ...

class ToolInfo(_message.Message):
    __slots__ = ("name", "description", "arguments_schema_json", "write", "needs_approval", "destructive", "idempotent", "open_world")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_SCHEMA_JSON_FIELD_NUMBER: _ClassVar[int]
    WRITE_FIELD_NUMBER: _ClassVar[int]
    NEEDS_APPROVAL_FIELD_NUMBER: _ClassVar[int]
    DESTRUCTIVE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENT_FIELD_NUMBER: _ClassVar[int]
    OPEN_WORLD_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    arguments_schema_json: str
    write: bool
    needs_approval: bool
    destructive: bool
    idempotent: bool
    open_world: bool
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., arguments_schema_json: _Optional[str] = ..., write: _Optional[bool] = ..., needs_approval: _Optional[bool] = ..., destructive: _Optional[bool] = ..., idempotent: _Optional[bool] = ..., open_world: _Optional[bool] = ...) -> None: ...

class FreezeRequest(_message.Message):
    __slots__ = ("agent", "all", "reason")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    agent: str
    all: bool
    reason: str
    def __init__(self, agent: _Optional[str] = ..., all: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class UnfreezeRequest(_message.Message):
    __slots__ = ("agent", "all", "reason")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    agent: str
    all: bool
    reason: str
    def __init__(self, agent: _Optional[str] = ..., all: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class ListApprovalsRequest(_message.Message):
    __slots__ = ("include_decided",)
    INCLUDE_DECIDED_FIELD_NUMBER: _ClassVar[int]
    include_decided: bool
    def __init__(self, include_decided: _Optional[bool] = ...) -> None: ...

class DecideRequest(_message.Message):
    __slots__ = ("call_id", "approve", "reason")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    APPROVE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    approve: bool
    reason: str
    def __init__(self, call_id: _Optional[str] = ..., approve: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class ReconcileRequest(_message.Message):
    __slots__ = ("call_id", "note")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    note: str
    def __init__(self, call_id: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class AdminResult(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: str
    def __init__(self, message: _Optional[str] = ...) -> None: ...

class ApprovalList(_message.Message):
    __slots__ = ("calls",)
    CALLS_FIELD_NUMBER: _ClassVar[int]
    calls: _containers.RepeatedCompositeFieldContainer[PendingCall]
    def __init__(self, calls: _Optional[_Iterable[_Union[PendingCall, _Mapping]]] = ...) -> None: ...

class PendingCall(_message.Message):
    __slots__ = ("call_id", "agent", "tool", "arguments_json", "intent", "task_id", "why", "created_ms", "escalate_at_ms", "expires_at_ms", "state", "decided_by", "findings")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    INTENT_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WHY_FIELD_NUMBER: _ClassVar[int]
    CREATED_MS_FIELD_NUMBER: _ClassVar[int]
    ESCALATE_AT_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DECIDED_BY_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    agent: str
    tool: str
    arguments_json: str
    intent: str
    task_id: str
    why: str
    created_ms: int
    escalate_at_ms: int
    expires_at_ms: int
    state: str
    decided_by: str
    findings: _containers.RepeatedCompositeFieldContainer[Finding]
    def __init__(self, call_id: _Optional[str] = ..., agent: _Optional[str] = ..., tool: _Optional[str] = ..., arguments_json: _Optional[str] = ..., intent: _Optional[str] = ..., task_id: _Optional[str] = ..., why: _Optional[str] = ..., created_ms: _Optional[int] = ..., escalate_at_ms: _Optional[int] = ..., expires_at_ms: _Optional[int] = ..., state: _Optional[str] = ..., decided_by: _Optional[str] = ..., findings: _Optional[_Iterable[_Union[Finding, _Mapping]]] = ...) -> None: ...
