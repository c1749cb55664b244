"""Where an argument value came from: outside text, or the agent and trusted tools.

A part of a write's argument (see ``value_parts``) is **from outside** when it occurs in
untrusted text the agent read (in this task, or in any of its tasks within the policy's
``taint_window``), unless it is vouched for in this task: it occurs in a trusted tool's answer
(not where that tool repeated its own arguments), or the agent said it (in a call's arguments
or intent) before any untrusted text held it.

``OutsideTexts`` keeps, per agent and task, an index over those segments, rebuilt (in a thread)
when the stored segments change; the database holds the text, the index is a cache.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace

from broker.storage.interfaces import TaintStore
from broker.storage.records import TextSegment
from broker.untrusted.outside_text import compact, segment_of_texts
from broker.untrusted.text_index import TextIndex
from broker.untrusted.value_parts import significant_parts

CACHE_CHARS = 16_000_000  # indexed text kept in memory, all agents together (~9 bytes a char)


@dataclass(frozen=True)
class OutsideHit:
    """A part of an argument found in outside text: ``part`` (compacted), the call that
    brought it in (``origin``) and the JSON path in that call's answer (``path``)."""

    part: str
    origin: str
    path: str

    @property
    def where(self) -> str:
        """The origin and path, as a person reads them."""
        return f"{self.origin} at {self.path}"


class OutsideView:
    """The outside text one task's write is checked against: an index over the untrusted
    text, and one over the task's text that vouches for values (trusted answers, own words)."""

    def __init__(self, untrusted: TextIndex, vouching: TextIndex) -> None:
        self._untrusted = untrusted
        self._vouching = vouching

    def hits(self, texts: Sequence[str]) -> list[OutsideHit | None]:
        """For each text (an argument's value), the first of its parts that came from
        outside, or None."""
        parts = [significant_parts(text) for text in texts]
        wanted = [part for each in parts for part in each]
        outside = self._untrusted.find_all(wanted)
        present = [part for part in wanted if outside[part]]
        vouching = self._vouching.find_all(present)
        return [
            next(
                (hit for p in each if outside[p] and (hit := self._hit(p, outside[p], vouching))),
                None,
            )
            for each in parts
        ]

    def vouched(self, texts: Sequence[str]) -> list[bool]:
        """For each text (a value of a recognised shape found by the older check), whether
        this task vouches for it: a trusted answer holds it, or the agent said it before any
        untrusted text did."""
        parts = [compact(text) for text in texts]
        outside = self._untrusted.find_all(parts)
        vouching = self._vouching.find_all(parts)
        return [_vouched(outside[part], vouching[part]) for part in parts]

    @staticmethod
    def _hit(part: str, outside: Found, vouching: dict[str, Found]) -> OutsideHit | None:
        if _vouched(outside, vouching.get(part, [])):
            return None
        first, offset = min(outside, key=lambda hit: hit[0].id)
        return OutsideHit(part, first.origin, first.path_at(offset))


Found = list[tuple[TextSegment, int]]


def _vouched(outside: Found, vouching: Found) -> bool:
    """A trusted answer of the task holds the part, or the agent's own words held it before
    any untrusted text did."""
    if any(s.source == "trusted" for s, _ in vouching):
        return True
    first = min((s.id for s, _ in outside), default=None)
    return any(s.source == "own" and (first is None or s.id < first) for s, _ in vouching)


def view_of_texts(texts: Sequence[str], origin: str = "the test case") -> OutsideView:
    """A view over texts a person wrote (policy tests, explain), all of them untrusted."""
    segments = [
        replace(segment_of_texts([("$", text)], "untrusted", origin), id=number)
        for number, text in enumerate(texts, start=1)
    ]
    return OutsideView(TextIndex(segments), TextIndex([]))


@dataclass
class _Indexed:
    ids: list[int]
    index: TextIndex


class OutsideTexts:
    """The views writes are checked against (see the module docstring), read from the store
    and indexed once per change: per agent, its untrusted text (shared by its tasks); per
    task, the text that vouches for values. Least recently used indexes are dropped past
    CACHE_CHARS."""

    def __init__(self, store: TaintStore) -> None:
        self._store = store
        self._cache: OrderedDict[tuple[str, ...], _Indexed] = OrderedDict()
        self._chars = 0

    async def view(self, agent: str, task_id: str, since_ms: int) -> OutsideView:
        """The view for a write of ``agent`` in ``task_id`` (untrusted text of its other tasks
        counts from ``since_ms``)."""
        listing = await self._store.text_ids(agent, task_id, since_ms)
        untrusted = [i for i, source in listing if source == "untrusted"]
        vouching = [i for i, source in listing if source != "untrusted"]
        return OutsideView(
            await self._index(("untrusted", agent), untrusted),
            await self._index(("vouching", agent, task_id), vouching),
        )

    async def _index(self, key: tuple[str, ...], ids: list[int]) -> TextIndex:
        cached = self._cache.get(key)
        if cached is not None and cached.ids == ids:
            self._cache.move_to_end(key)
            return cached.index
        kept = {s.id: s for s in cached.index.segments} if cached is not None else {}
        kept.update((s.id, s) for s in await self._store.texts([i for i in ids if i not in kept]))
        segments = [kept[i] for i in ids if i in kept]
        index = await asyncio.to_thread(TextIndex, segments)  # ~60 ms a megabyte
        self._forget(key)
        self._cache[key] = _Indexed(ids, index)
        self._chars += index.chars
        while self._chars > CACHE_CHARS and len(self._cache) > 1:
            self._forget(next(iter(self._cache)))
        return index

    def _forget(self, key: tuple[str, ...]) -> None:
        old = self._cache.pop(key, None)
        if old is not None:
            self._chars -= old.index.chars
