"""Text addressed to the model rather than to the human reader: a feature-based detector.

A signal, not the defence: it is tuned to stay quiet on ordinary email and to catch the common
shapes of indirect prompt injection, and a determined attacker can write around it. Nothing in
it is a list of strings from any corpus; each feature is a grammatical or structural pattern:

- sentence features, scored per sentence (a sentence reaching 3 is a ``prompt_injection``).
  Primary ones: overriding earlier instructions (3), addressing the AI/assistant/model (2-3),
  asking to keep things from the user (2-3), asking to send credentials or private data
  somewhere (3), asking for the system prompt (3), decode-and-follow (3), payment
  redirection (2), claims of a special mode or authority (2), referring to the reader's
  *response/answer/output/code* as something to change (1-2). Supporting ones count only in
  a sentence with a primary one, since ordinary mail is full of them: an imperative verb that
  shapes an answer, content to insert (a quoted phrase, a link), text-manipulation or
  audience words, urgency, "the following code", a mention of credentials (1 each). When the
  text elsewhere clearly addresses the model (a 3 from override/new instructions/addressing),
  2 is enough;
- off-topic tasks (``task_request``, low confidence, kept apart): an impersonal knowledge
  question or an imperative to write/explain/translate something, the way prompts read and
  emails rarely do; an email FAQ can look like this, so consumers should weigh it lightly;
- ``role_marker``: chat-template tokens, ``[INST]``, ``<system>`` tags, role labels at the
  start of a line followed by an instruction, fake "BEGIN SYSTEM PROMPT" / "end of email";
- ``encoded_instruction``: base64, hex or rot13 text (and, via ``scan_decoded``, text smuggled
  in tag characters) that decodes to something this detector flags;
- ``exfiltration_url``: markdown images with a query (they load by themselves when rendered),
  URLs with placeholders to fill (``?d={data}``), query values that decode to readable text;
- ``suspicious_code``: code that reads local data and sends it out, downloads and runs a
  program, or damages the system.

How its figures were obtained: ``python -m tests.bench.eval_injection`` (``make bench``)
inserts each attack instruction of BIPIA's email task (training split) at the start, middle
and end of each clean email, as BIPIA does, and counts the emails flagged (BENCHMARKS.md,
"Untrusted content"); the detector was developed looking at that split, so those are
development figures: 78% of attacked emails flagged (97% counting ``task_request``), 0 of 50
clean ones. On a held-out suite of 21 published injection attacks against an obedient agent
it flagged 10 of the 21 injected messages (48%) and 0 of 20 clean ones. Expect less on
attacks written to evade it: it is one ``Detector`` (``detectors``) and can be replaced by
configuration.

The features are in ``features`` (built from ``vocabulary``), the other findings in
``payloads``. Every regular expression runs once over the whole (lower-cased) text and is
linear: bounded repetitions, possessive quantifiers on runs that could otherwise be re-split,
no nested unbounded groups, lookbehinds so a long run is entered once. A feature whose words
do not occur in the text is not run at all; Python work is proportional to the hits, capped
per feature.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from itertools import islice

from broker.untrusted.features import (
    KNOWLEDGE_RE,
    MODEL_SIGNALS,
    PERSONAL,
    PRIMARY,
    QUOTED,
    SUPPORTING,
    TASK_FEATURES,
    WORDS,
    Feature,
)
from broker.untrusted.findings import (
    ENCODED_INSTRUCTION,
    PROMPT_INJECTION,
    TASK_REQUEST,
    Finding,
    excerpt,
)
from broker.untrusted.payloads import code, encoded, role_markers, urls

MAX_FINDINGS = 20  # per text
MAX_HITS = 2000  # per feature and text: enough to score, bounded Python work
MAX_DEPTH = 1  # decoded text is scanned, but not decoded again
THRESHOLD = 3
MIN_CHARS = 16  # shorter text cannot hold any finding's pattern; skipped
MAX_CANDIDATES = 50  # sentences searched one by one for supporting features

# ---- sentences -----------------------------------------------------------------------------

# A sentence ends at . ! ? (and closing quotes) before a space and a word that does not start
# in lower case ("e.g. the" and a quoted "Wow!" inside a sentence do not end it), at a line
# break, or at "|" (field separators in flattened records).
_BOUNDARY = re.compile(r"[.!?。！？]++[\"'”’)\]]{0,3}+(?=\s++(?![a-z])|$)|\n|\|")


def _lower(text: str) -> str:
    # str.lower() keeps the length for every character but U+0130; keeping offsets equal lets
    # one set of positions serve both the lower-cased and the original text.
    lowered = text.replace("\u0130", "I").lower()
    return lowered if len(lowered) == len(text) else text.lower()[: len(text)]


@dataclass
class _Sentence:
    start: int
    end: int
    scores: dict[str, int]
    task: dict[str, int]


def _sentence_starts(text: str) -> list[int]:
    starts = [0]
    for match in _BOUNDARY.finditer(text):
        starts.append(match.end())
    return starts


# ---- the detector --------------------------------------------------------------------------


def scan(text: str, path: str, *, depth: int = 0) -> list[Finding]:
    """Findings for ``text`` (the string at JSON ``path``): see the module docstring."""
    if len(text) < MIN_CHARS:
        return []
    lowered = _lower(text)
    findings: list[Finding] = []
    findings += role_markers(lowered, text, path)
    findings += _sentences(lowered, text, path)
    findings += code(lowered, path)
    findings += urls(text, path)
    if depth < MAX_DEPTH:
        for how, decoded in encoded(text, lowered):
            if _flags(scan(decoded, path, depth=depth + 1)):
                detail = f"{how} text decodes to: {excerpt(decoded)}"
                findings.append(Finding(ENCODED_INSTRUCTION, path, detail))
    return _dedupe(findings)[:MAX_FINDINGS]


def scan_decoded(decoded: str, how: str, path: str) -> list[Finding]:
    """``encoded_instruction`` when ``decoded`` (text recovered from ``how``, e.g. tag
    characters) trips the detector; used for text the unicode cleaner decoded."""
    if not _flags(scan(decoded, path, depth=MAX_DEPTH)):
        return []
    return [Finding(ENCODED_INSTRUCTION, path, f"{how} decodes to: {excerpt(decoded)}")]


def _flags(findings: list[Finding]) -> bool:
    return any(f.kind != TASK_REQUEST for f in findings)


def _sentences(lowered: str, text: str, path: str) -> list[Finding]:
    starts = _sentence_starts(text)
    words = set(WORDS.findall(lowered))
    sentences: dict[int, _Sentence] = {}

    def hit(features: tuple[Feature, ...], task: bool, span: tuple[int, int] | None) -> None:
        for feature in features:
            if not feature.may_match(words):
                continue
            found = (
                feature.pattern.finditer(lowered, *span)
                if span
                else feature.pattern.finditer(lowered)
            )
            for match in islice(found, MAX_HITS):
                # by its last character: a match may begin in the whitespace before a sentence
                index = bisect_right(starts, match.end() - 1) - 1
                start = starts[index]
                end = starts[index + 1] if index + 1 < len(starts) else len(text)
                if _vetoed(feature, lowered, match, start, end):
                    continue
                sentence = sentences.get(index)
                if sentence is None:
                    sentence = sentences[index] = _Sentence(start, end, {}, {})
                scores = sentence.task if task else sentence.scores
                scores[feature.name] = max(scores.get(feature.name, 0), feature.weight)

    hit(PRIMARY, task=False, span=None)
    # Supporting features only add to a sentence that already has a primary one: searched in
    # those sentences alone, or in the whole text when there are very many of them.
    candidates = [(s.start, s.end) for s in sentences.values()]
    for span in candidates if len(candidates) <= MAX_CANDIDATES else [None]:
        hit(SUPPORTING, task=False, span=span)
    talks_to_model = any(
        s.scores.get(name, 0) >= THRESHOLD for s in sentences.values() for name in MODEL_SIGNALS
    )
    hit(TASK_FEATURES, task=True, span=None)
    findings = []
    for index in sorted(sentences):
        sentence = sentences[index]
        kind = _judge(sentence, lowered, talks_to_model)
        if kind is not None:
            names = sentence.scores if kind == PROMPT_INJECTION else sentence.task
            why = ", ".join(sorted(names, key=lambda n: -names[n])[:4])
            snippet = excerpt(text[sentence.start : sentence.end])
            findings.append(Finding(kind, path, f"{why}: {snippet}"))
    return findings


def _vetoed(feature: Feature, lowered: str, match: re.Match[str], start: int, end: int) -> bool:
    before = feature.unless_before
    if before and before.search(lowered, max(start, match.start() - 80), match.start()):
        return True
    after = feature.unless_after
    return bool(after and after.search(lowered, match.start(), min(end, match.end() + 40)))


def _judge(sentence: _Sentence, lowered: str, talks_to_model: bool) -> str | None:
    score = sum(sentence.scores.values())
    threshold = THRESHOLD - 1 if talks_to_model else THRESHOLD
    if score >= threshold:
        return PROMPT_INJECTION
    if not sentence.task:
        return None
    body = QUOTED.sub(" ", lowered[sentence.start : sentence.end])
    task = max(sentence.task.values())
    if "translation request" in sentence.task or not PERSONAL.search(body):
        task += 1
    if "knowledge question" in sentence.task and KNOWLEDGE_RE.search(body):
        task += 1
    if score >= 2 and task >= 2:
        return PROMPT_INJECTION
    return TASK_REQUEST if task >= THRESHOLD else None


def _dedupe(findings: list[Finding]) -> list[Finding]:
    seen: set[Finding] = set()
    unique = []
    for finding in findings:
        if finding not in seen:
            seen.add(finding)
            unique.append(finding)
    return unique
