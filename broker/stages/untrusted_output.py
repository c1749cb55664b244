"""Stage ``untrusted``: what comes back from outside is cleaned, reported, and remembered."""

from __future__ import annotations

import json
from decimal import Decimal

from broker import jsonexact
from broker.pipeline import Call, Handler, Outcome
from broker.signing import now_ms
from broker.storage.interfaces import TaintStore
from broker.storage.records import TaintRow
from broker.untrusted import clean_value, extract_taint
from broker.v1 import broker_pb2 as pb


class UntrustedStage:
    """For actions with ``untrusted_output`` (all command tools unless they say otherwise):
    hidden HTML text, invisible characters and injected instructions are cleaned out and
    reported as findings (kind, JSON path, detail); the result marks the untrusted fields
    (``untrusted_paths``); and every address, URL, IBAN, phone number or token in the raw
    output is remembered for the task, so that a later write using one needs a human."""

    needs = frozenset({"verified", "action"})
    provides = frozenset[str]()

    def __init__(self, taint: TaintStore) -> None:
        self._taint = taint

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        outcome = await call_next(call)
        if not getattr(call.action.spec, "untrusted_output", False) or not outcome.result_json:
            return outcome
        # lenient on purpose: an upstream's duplicate keys are its business, not an error here
        raw = json.loads(outcome.result_json, parse_float=Decimal)
        cleaned = clean_value(raw)
        outcome.result_json = jsonexact.dumps(cleaned.value)
        outcome.findings.extend(
            pb.Finding(kind=f.kind, path=f.path, detail=f.detail) for f in cleaned.findings
        )
        outcome.untrusted_paths = cleaned.untrusted_paths
        # From the raw output, hidden parts included: an address in hidden text is exactly
        # what an injection wants used, whether or not the agent was shown it.
        now = now_ms()
        origin = f"{call.action.full_name} (call {call.call_id})"
        seen = set()
        found = extract_taint(raw)
        if cleaned.value != raw:  # cleaning can join what hidden characters kept apart
            found += extract_taint(cleaned.value)
        for taint in found:
            if (taint.kind, taint.value) not in seen:
                seen.add((taint.kind, taint.value))
                row = TaintRow(taint.kind, taint.value, f"{origin} at {taint.path}")
                self._taint.add(call.agent, call.request.task_id, row, now)
        return outcome
