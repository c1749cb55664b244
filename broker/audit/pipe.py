"""The broker's end of the audit writer (``broker.audit.writer``): records go out in batches,
acknowledgements come back, and each waiting caller is answered.

One batch is in flight at a time: records appended meanwhile gather into the next (one pickle,
one write to the pipe), which leaves when the writer has answered for the one before (under
load, no sooner than GATHER_S after it). The loop does no SQL, hashing or fsync for the audit.
A record appended with ``durable=False`` is answered once committed, the others once fsynced
(with durability ``fsync``). If the writer fails a batch, its callers get ``StoreError``; if
the writer stops, every caller still waiting does, and the next record starts a new writer
(the chain goes on from what was committed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from broker.audit.wire import ACK, DURABLE, FAILED, WITNESS, Batch, encode_batch
from broker.storage.records import StoreError

log = logging.getLogger(__name__)
STOP_TIMEOUT_S = 10.0  # the writer finishes what it has, then exits when its input closes
# Under load (the last batch had LOAD_ROWS records or more) a batch gathers records for up to
# GATHER_S after the one before left: fewer, bigger transactions (fewer fsyncs, commits and
# wake-ups on both sides) for a little latency. When the broker is quiet, records leave at once.
# Measured at 16 (BENCHMARKS.md): 1 ms meant more transactions and more CPU on both sides, 4 ms
# waits long enough that the loop runs out of calls to serve; 2 and 3 ms were alike. uvloop's
# timers count whole milliseconds (a 2.5 ms timer fires after 2), so only whole values differ.
LOAD_ROWS = 4
GATHER_S = 0.002


class _Outgoing:
    """The batch being gathered (or in flight), and who waits for it."""

    def __init__(self, batch_id: int, loop: asyncio.AbstractEventLoop) -> None:
        self.batch_id = batch_id
        self.rows: list[Sequence[Any]] = []
        self.durable = False
        self.checkpoint_after: float | None = None
        self.committed: asyncio.Future[None] = loop.create_future()
        self.synced: asyncio.Future[None] = loop.create_future()


class _Acks(asyncio.SubprocessProtocol):
    """Reads the writer's acknowledgements from its stdout."""

    def __init__(self, pipe: AuditPipe) -> None:
        self._pipe = pipe
        self._buffer = bytearray()
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self._buffer += data
        offset = 0
        while len(self._buffer) - offset >= ACK.size:
            batch_id, level, size = ACK.unpack_from(self._buffer, offset)
            end = offset + ACK.size + size
            if len(self._buffer) < end:
                break
            error = bytes(self._buffer[offset + ACK.size : end]).decode(errors="replace")
            offset = end
            self._pipe.acknowledged(batch_id, level, error)
        del self._buffer[:offset]

    def process_exited(self) -> None:
        self._pipe.writer_stopped()
        if not self.exited.done():
            self.exited.set_result(0)


STATE_URL_ENV = "TOOLBROKER_STATE_URL"


@dataclass(frozen=True)
class WriterOptions:
    """What the writer signs with and where it keeps each checkpoint besides audit.db."""

    key_file: Path | None = None
    broker_id: str = ""
    heads: Path | None = None  # broker.db
    state_url: str | None = None  # or the state's PostgreSQL: the trail and heads go there
    witnesses: Sequence[dict[str, Any]] = ()
    log_calls: bool = False

    def environment(self) -> dict[str, str] | None:
        """The writer's environment: the broker's, and the state's database URL if any."""
        if self.state_url is None:
            return None
        return {**os.environ, STATE_URL_ENV: self.state_url}

    def arguments(self) -> list[str]:
        """The writer's command-line arguments for these options."""
        arguments = ["--broker-id", self.broker_id]
        if self.key_file is not None:
            arguments += ["--key", str(self.key_file)]
        if self.heads is not None:
            arguments += ["--heads", str(self.heads)]
        if self.state_url is not None:  # its password stays out of the process list
            arguments += ["--state-url-env", STATE_URL_ENV]
        if self.witnesses:
            arguments += ["--witnesses", json.dumps(list(self.witnesses))]
        if self.log_calls:
            arguments.append("--log-calls")
        return arguments


class AuditPipe:
    """Appends audit records through a writer process of its own. ``on_witness`` hears how
    each witness is doing (the writer posts to them)."""

    def __init__(
        self,
        database: Path,
        durability: str,
        options: WriterOptions,
        on_witness: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self._on_witness = on_witness
        self._command = [
            sys.executable,
            "-m",
            "broker.audit.writer",
            "--database",
            str(database),
            "--durability",
            durability,
            *options.arguments(),
        ]
        self._environment = options.environment()
        self._transport: asyncio.SubprocessTransport | None = None
        self._acks: _Acks | None = None
        self._starting: asyncio.Task[None] | None = None
        self._outgoing: _Outgoing | None = None
        self._waiting: dict[int, _Outgoing] = {}
        self._next_id = 0
        self._send_scheduled = False
        self._last_sent, self._last_rows = 0.0, 0
        self._closed = False

    def append(self, values: Sequence[Any], *, durable: bool) -> asyncio.Future[None]:
        """Add a record to this turn's batch; the future is done once it is committed (or,
        with ``durable``, fsynced)."""
        outgoing = self._gather()
        outgoing.rows.append(values)
        outgoing.durable = outgoing.durable or durable
        return outgoing.synced if durable else outgoing.committed

    def checkpoint_if_due(self, after_s: float) -> asyncio.Future[None]:
        """Ask for a signed checkpoint if records came in and the last is ``after_s`` old."""
        outgoing = self._gather()
        outgoing.checkpoint_after = after_s
        return outgoing.committed

    async def start(self) -> None:
        """Start the writer now and wait until it has answered a first (empty) batch: it takes
        a few hundred ms, more on a busy machine, and the first call must not wait for it.
        StoreError if it cannot start."""
        if self._transport is None and self._starting is None:
            self._starting = asyncio.get_running_loop().create_task(self._start())
        if self._starting is not None:
            await asyncio.shield(self._starting)
        if self._transport is None:
            raise StoreError("the audit writer did not start (see the log above)")
        await self.checkpoint_if_due(float("inf"))  # a batch of nothing: answered once it runs

    async def close(self) -> None:
        """Let the writer finish what it has and stop."""
        self._closed = True
        if self._starting is not None:
            await asyncio.gather(self._starting, return_exceptions=True)
        if self._transport is None or self._acks is None:
            self._abandon(StoreError("the database is closed"))
            return
        loop = asyncio.get_running_loop()
        give_up = loop.time() + STOP_TIMEOUT_S
        while (self._outgoing or self._waiting) and not self._acks.exited.done():
            if loop.time() > give_up:
                break
            await asyncio.sleep(0.005)  # the last batches are being written
        stdin = self._transport.get_pipe_transport(0)
        if stdin is not None:
            stdin.close()
        try:
            await asyncio.wait_for(asyncio.shield(self._acks.exited), STOP_TIMEOUT_S)
        except TimeoutError:
            log.error("the audit writer did not stop in %.0f s; killing it", STOP_TIMEOUT_S)
            self._transport.kill()
        self._abandon(StoreError("the database is closed"))
        self._transport.close()
        self._transport = None

    # -- the loop's side -----------------------------------------------------------------------

    def _gather(self) -> _Outgoing:
        if self._closed:
            raise StoreError("the database is closed")
        if self._outgoing is None:
            self._next_id += 1
            self._outgoing = _Outgoing(self._next_id, asyncio.get_running_loop())
            self._kick()
        return self._outgoing

    def _kick(self) -> None:
        """Send the gathered batch once the writer has answered for the one before. So there
        is one batch in flight at a time: under load the next one gathers everything that came
        meanwhile (one write and one answer for many records), for at least GATHER_S; when
        idle, it leaves at once (after this turn of the loop's other records)."""
        if self._outgoing is None or self._waiting or self._send_scheduled:
            return
        if self._transport is None:
            if self._starting is None and not self._closed:  # the first record, or a restart
                self._starting = asyncio.get_running_loop().create_task(self._start())
            return
        self._send_scheduled = True
        loop = asyncio.get_running_loop()
        if self._last_rows >= LOAD_ROWS:
            loop.call_at(self._last_sent + GATHER_S, self._send)
        else:
            loop.call_soon(self._send)

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, acks = await loop.subprocess_exec(
                lambda: _Acks(self),
                *self._command,
                stdin=-1,
                stdout=-1,
                stderr=None,
                env=self._environment,
            )
        except OSError as exc:
            log.error("cannot start the audit writer: %s", exc)
            self._abandon(StoreError(f"cannot start the audit writer: {exc}"))
            return
        finally:
            self._starting = None
        self._transport, self._acks = transport, acks
        self._kick()

    def _send(self) -> None:
        self._send_scheduled = False
        outgoing, self._outgoing = self._outgoing, None
        if outgoing is None:
            return
        stdin = self._transport.get_pipe_transport(0) if self._transport else None
        if stdin is None or stdin.is_closing():
            _fail(outgoing, StoreError("the audit writer is not running"))
            return
        self._waiting[outgoing.batch_id] = outgoing
        self._last_sent, self._last_rows = asyncio.get_running_loop().time(), len(outgoing.rows)
        batch = Batch(outgoing.batch_id, outgoing.durable, outgoing.rows, outgoing.checkpoint_after)
        # uvloop's pipe transports write like asyncio's but do not subclass WriteTransport
        cast(asyncio.WriteTransport, stdin).write(encode_batch(batch))

    def acknowledged(self, batch_id: int, level: int, error: str) -> None:
        """The writer answered for a batch (or told how a witness is doing)."""
        if level == WITNESS:
            if self._on_witness is not None:
                with contextlib.suppress(ValueError):
                    self._on_witness(json.loads(error))
            return
        outgoing = self._waiting.get(batch_id)
        if outgoing is None:
            return
        if level == FAILED:
            del self._waiting[batch_id]
            _fail(outgoing, StoreError(error))
        else:
            if not outgoing.committed.done():
                outgoing.committed.set_result(None)
            if level == DURABLE or not outgoing.durable:
                del self._waiting[batch_id]
                if not outgoing.synced.done():
                    outgoing.synced.set_result(None)
        self._kick()

    def writer_stopped(self) -> None:
        """The writer exited: whoever still waits is told; the next record starts a new one."""
        code = self._transport.get_returncode() if self._transport else None
        if not self._closed:
            log.error("the audit writer stopped (exit code %s); starting a new one", code)
        waiting, self._waiting = self._waiting, {}
        for outgoing in waiting.values():
            _fail(outgoing, StoreError(f"the audit writer stopped (exit code {code})"))
        if self._transport is not None and not self._closed:
            self._transport.close()
            self._transport = None
            self._kick()

    def _abandon(self, error: StoreError) -> None:
        """Fail the batch still being gathered (the writer could not start, or we stop)."""
        outgoing, self._outgoing = self._outgoing, None
        if outgoing is not None:
            _fail(outgoing, error)


def _fail(outgoing: _Outgoing, error: StoreError) -> None:
    for future in (outgoing.committed, outgoing.synced):
        if not future.done():
            future.set_exception(error)
            future.add_done_callback(lambda f: f.exception())  # nobody may be waiting on both
