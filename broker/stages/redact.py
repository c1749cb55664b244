"""Stage ``redact``: no secret value leaves the broker, in a result or in an error."""

from __future__ import annotations

from typing import Any

from broker import errors, jsonexact
from broker.pipeline import Call, Handler, Outcome
from broker.redactor import Redaction, Redactor
from broker.v1 import broker_pb2 as pb
from broker.vault import Vault


class RedactStage:
    """Replaces every secret's value (and its base64, URL, hex and JSON forms) with
    ``[REDACTED:name]`` in results and error messages, and well-known token shapes found in
    upstream output with ``[REDACTED:kind]`` plus a finding."""

    needs = frozenset[str]()
    provides = frozenset[str]()

    def __init__(self, vault: Vault) -> None:
        self._vault = vault

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        try:
            outcome = await call_next(call)
        except errors.BrokerError as exc:
            redactor = await self._vault.redactor()
            exc.message = redactor.redact(exc.message)
            exc.args = (exc.message,)
            raise
        redactor = await self._vault.redactor()
        found = Redaction()
        outcome.result_json = redact_json(outcome.result_json, redactor, found)
        for finding in outcome.findings:
            finding.detail = redactor.redact(finding.detail)
        for kind, count in sorted(found.tokens.items()):
            outcome.findings.append(
                pb.Finding(
                    kind="secret_redacted",
                    path="$",
                    detail=f"{count} {kind} value(s) in the tool's output were redacted",
                )
            )
        return outcome


def redact_json(text: str, redactor: Redactor, found: Redaction) -> str:
    """Redact JSON text and keep it JSON: text-level first (fast, the common case), then value
    by value when a secret sat where a replacement would break the syntax (a bare number)."""
    redacted = redactor.redact(text, found)
    if not found or redacted == text:
        return redacted
    try:
        jsonexact.loads(redacted)
    except jsonexact.JsonError:
        return jsonexact.dumps(_walk(jsonexact.loads(text), redactor))
    return redacted


def _walk(value: Any, redactor: Redactor) -> Any:
    if isinstance(value, dict):
        return {redactor.redact(k): _walk(v, redactor) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, redactor) for v in value]
    if isinstance(value, str):
        return redactor.redact(value)
    if isinstance(value, bool) or value is None:
        return value
    text = str(value)
    redacted = redactor.redact(text)
    return value if redacted == text else redacted
