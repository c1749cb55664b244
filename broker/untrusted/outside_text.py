"""Outside text as the taint check compares it: every string of a tool's answer, compacted.

Compacting case-folds the text and drops everything but letters and digits, so that the same
value matches however it is written: ``XQ-99812 zz``, ``xq99812ZZ`` and ``Xq 998 12-ZZ`` are
all ``xq99812zz``. The strings of one answer become one ``TextSegment``: their compact forms
joined by a NUL (never a letter or digit, so no match spans two strings), with the offset at
which each string starts, so that a match can be traced back to its JSON path.

This runs where cleaning runs (in a worker process for a big answer): plain data in and out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from broker.storage.records import SEPARATOR, Source, TextSegment
from broker.untrusted.paths import leaves

NOT_ALNUM = re.compile(r"[\W_]+")  # what compacting drops


def compact(text: str) -> str:
    """Case-folded letters and digits of ``text``, in order; nothing else."""
    return NOT_ALNUM.sub("", text.casefold())


@dataclass
class _Builder:
    parts: list[str] = field(default_factory=list)
    marks: list[tuple[int, str]] = field(default_factory=list)
    size: int = 0

    def add(self, path: str, text: str) -> None:
        compacted = compact(text)
        if not compacted:
            return
        if self.parts:
            self.parts.append(SEPARATOR)
            self.size += 1
        self.marks.append((self.size, path))
        self.parts.append(compacted)
        self.size += len(compacted)


def segment_of(value: Any, source: Source, origin: str, *, path: str = "$") -> TextSegment:
    """The compact text of every string (and number) in a parsed JSON ``value``."""
    builder = _Builder()
    for where, text in leaves(value, path, numbers=True):
        builder.add(where, text)
    return TextSegment(source, origin, "".join(builder.parts), tuple(builder.marks))


def segment_of_texts(texts: Iterable[tuple[str, str]], source: Source, origin: str) -> TextSegment:
    """The compact text of (where, text) pairs, such as a call's arguments and its intent."""
    builder = _Builder()
    for where, text in texts:
        builder.add(where, text)
    return TextSegment(source, origin, "".join(builder.parts), tuple(builder.marks))


def without(segment: TextSegment, echoes: Iterable[str]) -> TextSegment:
    """``segment`` with every occurrence of the compact strings ``echoes`` blanked out: a
    trusted tool that repeats what it was asked (a search that echoes its query) must not
    vouch for that value. Blanks are NULs, so offsets and paths stay as they were."""
    text = segment.text
    for echo in sorted(set(echoes), key=len, reverse=True):
        if echo:
            text = text.replace(echo, SEPARATOR * len(echo))
    return TextSegment(
        segment.source, segment.origin, text, segment.marks, segment.task_id, segment.at_ms
    )


def answer_text(result_json: str, source: Source, echoes: Sequence[str]) -> TextSegment:
    """A final (cleaned, redacted) result's strings, compacted, as outside text (``source``
    untrusted) or as text that vouches for values (trusted). Whatever repeats the call's own
    arguments (``echoes``, compacted) is blanked in a trusted answer: a tool that echoes its
    query does not vouch for it."""
    try:
        value = json.loads(result_json, parse_float=Decimal)
    except ValueError:
        value = result_json
    segment = segment_of(value, source, "")
    return without(segment, echoes) if source == "trusted" else segment
