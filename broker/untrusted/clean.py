"""Clean a parsed JSON value from outside: every string to visible, plain text, with findings.

For each string: HTML (a real tag in it) becomes the text a reader would see, hidden parts
reported as ``hidden_text`` and scanned; invisible Unicode is stripped and compatibility
letters mapped (``invisible_unicode``, ``unicode_normalised``, ``mixed_script``); then the
detector (``detectors``: the built-in feature detector unless the config names another) looks
for text addressed to the model. Numbers (``Decimal`` included), booleans and
null pass through untouched; member names lose invisible characters (unless two would then
collide) and long ones are scanned, but are not listed as untrusted paths.

Limits, so hostile input stays cheap: a string is cut at MAX_STRING_CHARS and a whole value
at MAX_TOTAL_CHARS (``truncated``); containers nested deeper than MAX_DEPTH become null
(``truncated``); at most MAX_FINDINGS findings are listed, then one ``findings_truncated``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from broker.untrusted.detectors import Detector, FeatureDetector
from broker.untrusted.findings import (
    FINDINGS_TRUNCATED,
    HIDDEN_TEXT,
    INVISIBLE_UNICODE,
    MIXED_SCRIPT,
    TASK_REQUEST,
    TRUNCATED,
    UNICODE_NORMALISED,
    Finding,
    excerpt,
)
from broker.untrusted.html_text import html_to_text, looks_like_html
from broker.untrusted.paths import child
from broker.untrusted.unicode import UnicodeCleaned, clean_unicode, detection_view

MAX_STRING_CHARS = 1_000_000
MAX_TOTAL_CHARS = 4_000_000
MAX_DEPTH = 64
MAX_FINDINGS = 200
MAX_UNTRUSTED_PATHS = 10_000
MIN_SCANNED_KEY = 16  # member names at least this long are scanned too


@dataclass(frozen=True)
class Cleaned:
    """The cleaned value (same shape as the input), what was found, and where outside text is.

    ``untrusted_paths`` lists the JSON path of every string leaf of ``value``, in document
    order: all of them came from outside and belong in the data channel of a prompt, never in
    its instruction channel. When a value has more than MAX_UNTRUSTED_PATHS strings, the list
    is the single root path instead, meaning "every string under here".
    """

    value: Any
    findings: list[Finding]
    untrusted_paths: list[str]


def clean_value(value: Any, *, path: str = "$", detector: Detector | None = None) -> Cleaned:
    """Clean every string in ``value`` (a parsed JSON value); ``path`` names its root."""
    walk = _Walk(detector or FeatureDetector())
    cleaned = walk.value(value, path, 0)
    findings = walk.findings
    if walk.dropped:
        findings.append(Finding(FINDINGS_TRUNCATED, path, f"{walk.dropped} more not listed"))
    paths = [path] if len(walk.paths) > MAX_UNTRUSTED_PATHS else walk.paths
    return Cleaned(cleaned, findings, paths)


def clean_text(text: str, *, path: str = "$") -> tuple[str, list[Finding]]:
    """One string cleaned as ``clean_value`` would, and its findings."""
    cleaned = clean_value(text, path=path)
    return cleaned.value, cleaned.findings


@dataclass
class _Walk:
    detector: Detector
    findings: list[Finding] = field(default_factory=list)
    dropped: int = 0
    paths: list[str] = field(default_factory=list)
    budget: int = MAX_TOTAL_CHARS

    def add(self, findings: list[Finding]) -> None:
        room = MAX_FINDINGS - len(self.findings)
        self.findings.extend(findings[: max(room, 0)])
        self.dropped += max(len(findings) - max(room, 0), 0)

    def value(self, item: Any, path: str, depth: int) -> Any:
        if isinstance(item, str):
            return self.string(item, path)
        if isinstance(item, dict | list | tuple) and depth >= MAX_DEPTH:
            self.add([Finding(TRUNCATED, path, f"nested deeper than {MAX_DEPTH}: dropped")])
            return None
        if isinstance(item, dict):
            return self.members(item, path, depth)
        if isinstance(item, list | tuple):
            return [self.value(v, child(path, i), depth + 1) for i, v in enumerate(item)]
        return item

    def members(self, item: dict[Any, Any], path: str, depth: int) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        taken = set(item)  # names in use: a cleaned name must not collide with any
        for key, member in item.items():
            name = key
            if isinstance(key, str):
                name = self.key(key, path, taken)
                taken.add(name)
            out[name] = self.value(member, child(path, str(name)), depth + 1)
        return out

    def key(self, key: str, path: str, taken: set[Any]) -> str:
        if len(key) > self.budget:
            return key  # over the size budget: kept as it is, like the strings past it
        self.budget -= len(key)
        cleaned = clean_unicode(key)
        name = cleaned.text if cleaned.text == key or cleaned.text not in taken else key
        where = child(path, name)
        if name != key:
            self.add(_unicode_findings(cleaned, where))
        if len(name) >= MIN_SCANNED_KEY:
            self.add([f for f in self.detector.scan(name, where) if f.kind != TASK_REQUEST])
        return name

    def string(self, text: str, path: str) -> str:
        self.paths.append(path)
        text = self.cut(text, path)
        if looks_like_html(text):
            text = self.html(text, path)
        cleaned = clean_unicode(text)
        self.add(_unicode_findings(cleaned, path))
        for smuggled in cleaned.smuggled:
            self.add(self.detector.scan_decoded(smuggled, "invisible characters", path))
        view = detection_view(cleaned.text) if cleaned.mixed else cleaned.text
        self.add(self.detector.scan(view, path))
        return cleaned.text

    def cut(self, text: str, path: str) -> str:
        limit = min(MAX_STRING_CHARS, max(self.budget, 0))
        self.budget -= min(len(text), limit)
        if len(text) > limit:
            self.add([Finding(TRUNCATED, path, f"{len(text):,} characters cut to {limit:,}")])
            return text[:limit]
        return text

    def html(self, text: str, path: str) -> str:
        visible = html_to_text(text)
        for chunk in visible.hidden:
            self.add([Finding(HIDDEN_TEXT, path, f"{chunk.reason}: {excerpt(chunk.text)}")])
            self.add(self.removed(chunk.text, path, "in hidden text"))
        for comment in visible.comments:
            self.add(self.removed(comment, path, "in an HTML comment"))
        more = visible.hidden_total - len(visible.hidden)
        if more:
            self.add([Finding(HIDDEN_TEXT, path, f"{more} more hidden parts not listed")])
        return visible.text

    def removed(self, text: str, path: str, where: str) -> list[Finding]:
        """Detector findings in text that cleaning removed: the model will not see it, but
        that someone hid an instruction there is worth knowing. Off-topic questions are not."""
        found = self.detector.scan(clean_unicode(text).text, path)
        return [
            Finding(f.kind, path, f"{where}: {f.detail}") for f in found if f.kind != TASK_REQUEST
        ]


def _unicode_findings(cleaned: UnicodeCleaned, path: str) -> list[Finding]:
    findings = []
    if cleaned.removed:
        what = ", ".join(f"{count} {name}" for name, count in cleaned.removed.most_common())
        detail = f"removed {what}"
        if cleaned.smuggled:
            detail += f"; they spell: {excerpt(cleaned.smuggled[0])}"
        findings.append(Finding(INVISIBLE_UNICODE, path, detail))
    if cleaned.normalised:
        findings.append(
            Finding(
                UNICODE_NORMALISED,
                path,
                f"{cleaned.normalised} compatibility letters/digits mapped to ASCII "
                f"(e.g. {excerpt(cleaned.normalised_example)})",
            )
        )
    if cleaned.mixed:
        words = ", ".join(excerpt(w, 30) for w in cleaned.mixed[:5])
        findings.append(
            Finding(MIXED_SCRIPT, path, f"words mixing Latin with Cyrillic/Greek: {words}")
        )
    return findings
