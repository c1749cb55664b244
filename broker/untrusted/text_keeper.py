"""Keeping outside text within its bound, without a read per call."""

from __future__ import annotations

from broker.storage.interfaces import TaintStore
from broker.storage.records import Source, TextSegment

KEEP_CHARS = 4_000_000  # text kept per agent and source (compacted); the oldest goes first
PRUNED_TO = 3_600_000  # a cut goes this far, so that it runs once per tenth of the bound


class TextKeeper:
    """Stores segments of text and keeps each agent's text of each source within KEEP_CHARS.
    The size is read from the store once per agent and source, then counted here: one
    process's count, enough to know when to cut (the store cuts by its own count) and to tell
    the caller that the agent's oldest text went."""

    def __init__(self, store: TaintStore) -> None:
        self._store = store
        self._sizes: dict[tuple[str, Source], int] = {}

    async def keep(self, agent: str, segment: TextSegment) -> bool:
        """Store ``segment``; True when this pushed the agent's oldest text of its source
        out."""
        key = (agent, segment.source)
        if key not in self._sizes:
            self._sizes[key] = await self._store.text_chars(agent, segment.source)
        self._store.add_text(agent, segment)
        size = self._sizes[key] + len(segment.text)
        if size <= KEEP_CHARS:
            self._sizes[key] = size
            return False
        self._store.prune_text(agent, segment.source, PRUNED_TO)
        self._sizes[key] = PRUNED_TO
        return True
