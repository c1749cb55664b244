"""stdin and stdout for the MCP SDK's stdio server, read and written on the event loop.

The SDK reads each line and writes each answer through a worker thread (``anyio.wrap_file``):
three thread hand-offs a call, measured as most of what the stdio front adds (BENCHMARKS.md,
"MCP front"). When stdin and stdout are pipes (as every MCP client starts a server), these
give the SDK the same line interface on asyncio's pipe transports instead. As the SDK does,
the descriptors 0 and 1 are taken off the wire while the front serves: fd 0 reads the null
device and fd 1 writes to stderr, so nothing stray can corrupt the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import AsyncIterator

MAX_LINE = 16 * 1024 * 1024  # one JSON-RPC message; a longer line is refused, not buffered


class PipeLines:
    """Lines of the wire's read end, as the SDK iterates its stdin."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    def __aiter__(self) -> PipeLines:
        return self

    async def __anext__(self) -> str:
        line = await self._reader.readline()
        if not line:
            raise StopAsyncIteration
        return line.decode("utf-8", errors="replace")


class PipeWriter:
    """The wire's write end, as the SDK writes its stdout: ``write`` then ``flush``."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    async def write(self, text: str) -> None:
        self._writer.write(text.encode("utf-8"))

    async def flush(self) -> None:
        await self._writer.drain()


def is_pipe(fd: int) -> bool:
    """True when ``fd`` is a pipe or a socket (what asyncio's pipe transports serve)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


@contextlib.asynccontextmanager
async def pipe_stdio() -> AsyncIterator[tuple[PipeLines, PipeWriter]]:
    """The wire as (lines, writer) on the loop; fds 0 and 1 diverted meanwhile, restored
    after."""
    loop = asyncio.get_running_loop()
    wire_in, wire_out = os.dup(0), os.dup(1)
    saved_in, saved_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    try:
        reader = asyncio.StreamReader(limit=MAX_LINE)
        reading, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(wire_in, "rb", buffering=0)
        )
        # the stream writer's own protocol, as asyncio builds it for a connection
        writing, protocol = await loop.connect_write_pipe(
            lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()),
            os.fdopen(wire_out, "wb", buffering=0),
        )
        writer = asyncio.StreamWriter(writing, protocol, None, loop)
        try:
            yield PipeLines(reader), PipeWriter(writer)
        finally:
            writing.close()
            reading.close()
    finally:
        os.dup2(saved_in, 0)
        os.dup2(saved_out, 1)
        os.close(saved_in)
        os.close(saved_out)
