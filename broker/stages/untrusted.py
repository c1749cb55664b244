"""Stage ``untrusted``: what comes back from outside is cleaned, reported, and remembered."""

from __future__ import annotations

import json
from decimal import Decimal

from broker import jsonexact
from broker.identity import now_ms
from broker.pipeline import Call, Handler, Outcome
from broker.store import Store
from broker.untrusted import clean_value, extract_taint
from broker.v1 import broker_pb2 as pb


class UntrustedStage:
    """For actions with ``untrusted_output`` (all command tools unless they say otherwise):
    hidden HTML text, invisible characters and injected instructions are cleaned out and
    reported as findings (kind, JSON path, detail); the result marks the untrusted fields
    (``untrusted_paths``); and every address, URL, IBAN, phone number or token in the raw
    output is remembered for the task, so that a later write using one needs a human."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        assert call.action is not None
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
                self._store.add_taint(
                    call.agent,
                    call.request.task_id,
                    taint.kind,
                    taint.value,
                    f"{origin} at {taint.path}",
                    now,
                )
        return outcome
