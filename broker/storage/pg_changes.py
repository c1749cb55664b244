"""What one broker process tells the others through PostgreSQL: LISTEN/NOTIFY on one channel.

A change another replica must act on at once is announced as ``topic:key`` (``freezes:``, a
freeze set or lifted; ``call:<id>``, a stored call moved on, so its Await may answer). Each
process listens on a connection of its own and hands every notification to its handler. A
notification is lost when no one listens (PostgreSQL keeps none for later), so after every
(re)connect the handler is told ``resync:``: re-read everything, something may have been
missed while the connection was down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import psycopg

from broker.storage.pg_connection import CONNECT_TIMEOUT_S, Connection, error_text
from broker.storage.urls import redacted

log = logging.getLogger(__name__)

CHANNEL = "toolbroker"
RESYNC = "resync"
RECONNECT_S = 0.5  # between attempts while the server is away: a freeze waits at most this

Handler = Callable[[str, str], None]


async def announce(conn: Connection, topic: str, key: str = "") -> None:
    """Tell every listening process ``topic:key`` when the caller's transaction commits."""
    await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{topic}:{key}"))


class ChangeListener:
    """Listens on CHANNEL from a task of its own, reconnecting for as long as it runs."""

    def __init__(self, url: str, handler: Handler) -> None:
        self._url = url
        self._handler = handler
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def start(self) -> None:
        """Start listening (in the background)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="pg-listen")

    async def stop(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except (psycopg.Error, OSError) as exc:
                if self.connected.is_set():
                    log.warning(
                        "lost the change feed of %s, reconnecting: %s",
                        redacted(self._url),
                        error_text(exc),
                    )
            self.connected.clear()
            await asyncio.sleep(RECONNECT_S)  # the server is away: try again soon, not in a loop

    async def _listen(self) -> None:
        # TCP keepalive: a connection that died without a word (a machine lost, a network
        # cut) is noticed within about 20 s and made again (a server restart closes it at once)
        conn = await psycopg.AsyncConnection.connect(
            self._url,
            autocommit=True,
            connect_timeout=max(1, int(CONNECT_TIMEOUT_S)),
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=5,
            keepalives_count=3,
        )
        async with conn:
            await conn.execute(f"LISTEN {CHANNEL}")
            self.connected.set()
            self._tell(RESYNC, "")  # whatever changed while no one listened
            async for note in conn.notifies():
                topic, _, key = note.payload.partition(":")
                self._tell(topic, key)

    def _tell(self, topic: str, key: str) -> None:
        try:
            self._handler(topic, key)
        except Exception:  # a handler's bug must not stop the feed for every later change
            log.exception("handling the change %s:%s failed", topic, key)
