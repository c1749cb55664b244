"""What a request produced, before it becomes a protobuf message: the one type every stage
returns (its own module, so the worker processes that interpret big answers need no more)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from broker.v1 import broker_pb2 as pb


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
