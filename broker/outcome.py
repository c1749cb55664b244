"""What a request produced, before it becomes a protobuf message: the one type every stage
returns (its own module, so the worker processes that interpret big answers need no more)."""

from __future__ import annotations

import hashlib
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
    # (text, SHA-256 hex, UTF-8 size) of a result_json digested off the loop; good while that
    # very text is the result
    _digested: tuple[str, str, int] | None = field(default=None, repr=False, compare=False)

    def digested(self, text: str, digest: str, size: int) -> None:
        """Set the result to ``text``, whose digest and size were computed elsewhere (in the
        worker that made it), so that the audit record need not hash it again on the loop."""
        self.result_json = text
        self._digested = (text, digest, size)

    def result_digest(self) -> tuple[str, int]:
        """SHA-256 (hex) and size in bytes of the result as UTF-8; ("", 0) for none."""
        known = self._digested
        if known is not None and known[0] is self.result_json:
            return known[1], known[2]
        return digest_of(self.result_json)


def digest_of(text: str) -> tuple[str, int]:
    """SHA-256 (hex) and size in bytes of ``text`` as UTF-8; ("", 0) for the empty text."""
    if not text:
        return "", 0
    data = text.encode()
    return hashlib.sha256(data).hexdigest(), len(data)
