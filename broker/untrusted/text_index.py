"""Find a compact string inside megabytes of compact outside text in microseconds.

A plain substring search (``needle in text``) reads the whole text: ~300 us a megabyte here,
for every part of every argument of a write. This index reads a handful of entries instead.

How: the 4 characters starting at every second position of the text (a sampled 4-gram, read
as one 64-bit number from the text's UTF-16 form) are kept in a sorted array beside their
position. Any occurrence of a needle of 5 or more characters starts at an even or an odd
position; in either case some of the needle's 4-grams fall on sampled positions (those at its
even offsets, or those at its odd ones). So for each of the two cases the rarest such 4-gram is
looked up (two binary searches for all of a write's needles at once), and only its positions
are compared with the needle (for a common 4-gram, after one array comparison of the 4-gram
next to it). Memory: 8 bytes per character of text, plus the text and, once a common 4-gram
was looked up, its UTF-16 form.

Characters beyond the Basic Multilingual Plane (emoji, some CJK) are read as U+FFFD, so that
every character is one UTF-16 unit: such a character matches any other of its kind in the
index, and the comparison with the text itself, which decides, tells them apart.
"""

from __future__ import annotations

import re
from array import array
from bisect import bisect_right
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from broker.storage.records import SEPARATOR, TextSegment

GRAM = 4  # characters read together: 4 UTF-16 units are one 64-bit number
STEP = 2  # every STEP-th position is sampled
MIN_NEEDLE = GRAM + STEP - 1  # shorter needles cannot be found: they are not looked for
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")
_FEW = 64  # candidates compared one by one; more are compared as arrays

CodeArray = npt.NDArray[np.uint64]


def _units(text: str) -> bytes:
    """``text`` in UTF-16, one unit a character (see the module docstring)."""
    return _ASTRAL.sub("\ufffd", text).encode("utf-16-le")


def _gram_codes(units: bytes) -> CodeArray:
    """The 4-gram starting at each character, as the 8 bytes it is in UTF-16 (overlapping
    reads of the same buffer: no arithmetic)."""
    count = len(units) // 2 - GRAM + 1
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    return np.ndarray((count,), dtype="<u8", buffer=units, strides=(2,))


class TextIndex:
    """An index over the text of several segments (joined by NULs) that answers which
    segments hold a compact string, and at what offset of each."""

    def __init__(self, segments: Sequence[TextSegment]) -> None:
        self.segments = list(segments)
        self._starts: list[int] = []
        parts: list[str] = []
        position = 0
        for segment in self.segments:
            self._starts.append(position)
            parts.append(segment.text)
            position += len(segment.text) + 1
        self.text = SEPARATOR.join(parts)
        sampled = _gram_codes(_units(self.text))[::STEP]
        order = np.argsort(sampled, kind="stable")
        self._codes: CodeArray = sampled[order]
        # a plain array: slicing a few entries of it costs less than numpy's call overhead
        self._positions = array("q", (order * STEP).astype(np.int64).tobytes())
        self._units_cache: bytes | None = None

    @property
    def chars(self) -> int:
        """How many characters of text it covers."""
        return len(self.text)

    def find(self, needle: str) -> list[tuple[TextSegment, int]]:
        """(segment, offset in it) of each segment holding ``needle`` (compact), the first
        offset of each; empty for a needle shorter than MIN_NEEDLE."""
        return self.find_all([needle])[needle]

    def find_all(self, needles: Sequence[str]) -> dict[str, list[tuple[TextSegment, int]]]:
        """``find`` for several needles at once: one pass of array work for all of them (the
        per-call cost of numpy, not the text, is what a few needles pay)."""
        found: dict[str, list[tuple[TextSegment, int]]] = {needle: [] for needle in needles}
        wanted = [n for n in found if len(n) >= MIN_NEEDLE and SEPARATOR not in n]
        if not wanted or not self.text:
            return found
        joined = SEPARATOR.join(wanted)  # the 4-grams of every needle, in one array
        codes = _gram_codes(_units(joined))
        left_array = np.searchsorted(self._codes, codes, side="left")
        # plain lists from here: per needle, numpy's call overhead would outweigh the work
        lefts = left_array.tolist()
        counts = (np.searchsorted(self._codes, codes, side="right") - left_array).tolist()
        spans, begin = {}, 0
        for needle in wanted:
            spans[needle] = (begin, begin + len(needle) - GRAM + 1)
            begin += len(needle) + 1
        absent: list[str] = []
        for needle in sorted(wanted, key=len):  # a needle holding an absent one is absent
            if any(part in needle for part in absent):
                continue
            begin, end = spans[needle]
            starts = self._occurrences(needle, lefts[begin:end], counts[begin:end])
            if starts:
                found[needle] = self._by_segment(starts)
            else:
                absent.append(needle)
        return found

    def _by_segment(self, starts: list[int]) -> list[tuple[TextSegment, int]]:
        first: dict[int, int] = {}
        for start in starts:
            index = bisect_right(self._starts, start) - 1
            first.setdefault(index, start - self._starts[index])
        return [(self.segments[index], first[index]) for index in sorted(first)]

    def _occurrences(self, needle: str, lefts: list[int], counts: list[int]) -> list[int]:
        starts: list[int] = []
        for parity in range(STEP):
            at_parity = counts[parity::STEP]
            if not at_parity or 0 in at_parity:
                continue  # a 4-gram is absent: no occurrence starts at this parity
            offset = parity + STEP * at_parity.index(min(at_parity))  # the rarest 4-gram
            left, count = lefts[offset], counts[offset]
            starts.extend(self._verified(needle, self._positions[left : left + count], offset))
        return sorted(starts)

    def _verified(self, needle: str, positions: array[int], offset: int) -> list[int]:
        """The starts (a sampled position minus ``offset``) where the text holds ``needle``."""
        text = self.text
        if len(positions) > _FEW:  # a common 4-gram: keep those whose next one matches too
            positions = self._narrowed(needle, positions, offset)
        return [
            at
            for position in positions
            if (at := position - offset) >= 0 and text.startswith(needle, at)
        ]

    def _narrowed(self, needle: str, positions: array[int], offset: int) -> array[int]:
        """Of many candidate positions, those where the text also holds the needle's 4-gram
        after (or before) the one looked up: one array comparison instead of many."""
        last = len(needle) - GRAM
        other = offset + GRAM if offset + GRAM <= last else (0 if offset else last)
        if other == offset:
            return positions
        wanted = _gram_codes(_units(needle[other : other + GRAM]))[0]
        starts = np.frombuffer(positions, dtype=np.int64) + (other - offset)
        starts = starts[(starts >= 0) & (starts <= len(self.text) - GRAM)]
        units = self._all_units()
        kept = starts[_gram_codes(units)[starts] == wanted] - (other - offset)
        return array("q", kept.tobytes())

    def _all_units(self) -> bytes:
        if self._units_cache is None:
            self._units_cache = _units(self.text)
        return self._units_cache
