"""Stage ``untrusted``: what comes back from outside is cleaned, reported, and remembered."""

from __future__ import annotations

from broker.pipeline import Call, Handler, Outcome
from broker.signing import now_ms
from broker.storage.interfaces import TaintStore
from broker.storage.records import TaintRow
from broker.untrusted.results import clean_result
from broker.v1 import broker_pb2 as pb
from broker.workers import Workers


class UntrustedStage:
    """For actions with ``untrusted_output`` (all command tools unless they say otherwise):
    hidden HTML text, invisible characters and injected instructions are cleaned out and
    reported as findings (kind, JSON path, detail); the result marks the untrusted fields
    (``untrusted_paths``); and every address, URL, IBAN, phone number or token in the raw
    output is remembered for the task, so that a later write using one needs a human. A big
    result is cleaned in a worker process: the loop serves other calls meanwhile."""

    needs = frozenset({"verified", "action"})
    provides = frozenset[str]()

    def __init__(self, taint: TaintStore, workers: Workers, detector: str) -> None:
        self._taint = taint
        self._workers = workers
        self._detector = detector

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        outcome = await call_next(call)
        if not getattr(call.action.spec, "untrusted_output", False) or not outcome.result_json:
            return outcome
        size = len(outcome.result_json)
        cleaned = await self._workers.run(size, clean_result, outcome.result_json, self._detector)
        outcome.result_json = cleaned.result_json
        outcome.findings.extend(
            pb.Finding(kind=f.kind, path=f.path, detail=f.detail) for f in cleaned.findings
        )
        outcome.untrusted_paths = cleaned.untrusted_paths
        origin = f"{call.action.full_name} (call {call.call_id})"
        rows = [TaintRow(v.kind, v.value, f"{origin} at {v.path}") for v in cleaned.taint]
        self._taint.add(call.agent, call.request.task_id, rows, now_ms())
        return outcome
