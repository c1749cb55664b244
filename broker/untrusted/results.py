"""A tool's result, cleaned whole: the work of the ``untrusted`` stage, as one function that
runs on the event loop for a small result and in a worker process for a big one.

In: the result's JSON text and the detector's name. Out: the cleaned JSON text, the findings,
the untrusted paths and the outside values to remember for the task, all plain data (it
crosses a process boundary). Taint comes from the raw value, hidden parts included: an address
in hidden text is exactly what an injection wants used, whether or not the agent was shown it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from decimal import Decimal

from broker import jsonexact
from broker.untrusted.clean import clean_value
from broker.untrusted.detectors import Detector, load_detector
from broker.untrusted.findings import Finding
from broker.untrusted.taint import TaintedValue, extract_taint


@dataclass(frozen=True)
class CleanedResult:
    """What cleaning made of a result."""

    result_json: str
    findings: list[Finding]
    untrusted_paths: list[str]
    taint: list[TaintedValue]  # each (kind, value) once


def clean_result(result_json: str, detector: str) -> CleanedResult:
    """Clean a result's JSON text with the detector named ``detector``."""
    # lenient on purpose: an upstream's duplicate keys are its business, not an error here
    raw = json.loads(result_json, parse_float=Decimal)
    cleaned = clean_value(raw, detector=_detector(detector))
    found = extract_taint(raw)
    if cleaned.value != raw:  # cleaning can join what hidden characters kept apart
        found += extract_taint(cleaned.value)
    seen: set[tuple[str, str]] = set()
    taint = []
    for value in found:
        if (value.kind, value.value) not in seen:
            seen.add((value.kind, value.value))
            taint.append(value)
    return CleanedResult(
        jsonexact.dumps(cleaned.value), cleaned.findings, cleaned.untrusted_paths, taint
    )


@functools.cache
def _detector(spec: str) -> Detector:
    """One detector per name and process (a model-based one may be slow to load)."""
    return load_detector(spec)
