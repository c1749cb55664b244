"""Stage ``provenance``: what an answer said is remembered for the task, once it is final."""

from __future__ import annotations

from dataclasses import replace

from broker.pipeline import Call, Handler, Outcome
from broker.signing import now_ms
from broker.untrusted.outside_text import answer_text, compact
from broker.untrusted.paths import leaves
from broker.untrusted.text_index import MIN_NEEDLE
from broker.untrusted.text_keeper import KEEP_CHARS, TextKeeper
from broker.v1 import broker_pb2 as pb
from broker.workers import Workers

DROPPED = "outside_text_dropped"


class ProvenanceStage:
    """Keeps the text of every answer, as the agent receives it (cleaned and redacted, so no
    secret value is stored): an untrusted action's answer as outside text, which a later write
    may not draw values from without a human; a trusted action's answer as text that vouches
    for the values in it, except those it repeats from the call's own arguments. A big answer
    is compacted in a worker process."""

    needs = frozenset({"verified", "action", "arguments"})
    provides = frozenset[str]()

    def __init__(self, keeper: TextKeeper, workers: Workers) -> None:
        self._keeper = keeper
        self._workers = workers

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        outcome = await call_next(call)
        if not outcome.result_json:
            return outcome
        untrusted = bool(getattr(call.action.spec, "untrusted_output", False))
        echoes = [] if untrusted else [compact(t) for _, t in leaves(call.arguments, "$")]
        size = len(outcome.result_json)
        source = "untrusted" if untrusted else "trusted"
        text = await self._workers.run(size, answer_text, outcome.result_json, source, echoes)
        if text.letters < MIN_NEEDLE:  # nothing a write could draw on
            return outcome
        origin = f"{call.action.full_name} (call {call.call_id})"
        stored = replace(text, origin=origin, task_id=call.request.task_id, at_ms=now_ms())
        if await self._keeper.keep(call.agent, stored) and untrusted:
            outcome.findings.append(
                pb.Finding(
                    kind=DROPPED,
                    path="$",
                    detail=f"this agent's outside text passed {KEEP_CHARS:,} characters: the "
                    "oldest was dropped, and a write can no longer be traced to it",
                )
            )
        return outcome
