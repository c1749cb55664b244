"""Stage ``redact``: no secret value leaves the broker, in a result or in an error."""

from __future__ import annotations

from broker import errors
from broker.pipeline import Call, Handler, Outcome
from broker.redactor import redact_result
from broker.v1 import broker_pb2 as pb
from broker.vault import Vault
from broker.workers import Workers


class RedactStage:
    """Replaces every secret's value (and its base64, URL, hex and JSON forms) with
    ``[REDACTED:name]`` in results and error messages, and well-known token shapes found in
    upstream output with ``[REDACTED:kind]`` plus a finding. A big result is redacted in a
    worker process (the loop serves other calls meanwhile)."""

    needs = frozenset[str]()
    provides = frozenset[str]()

    def __init__(self, vault: Vault, workers: Workers) -> None:
        self._vault = vault
        self._workers = workers

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        try:
            outcome = await call_next(call)
        except errors.BrokerError as exc:
            redactor = await self._vault.redactor()
            exc.message = redactor.redact(exc.message)
            exc.args = (exc.message,)
            raise
        redactor = await self._vault.redactor()
        size = len(outcome.result_json)
        text, found, (digest, length) = await self._workers.run(
            size, redact_result, outcome.result_json, redactor
        )
        outcome.digested(text, digest, length)
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
