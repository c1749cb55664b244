"""The audit writer: a process of its own that owns ``audit.db`` and writes the hash chain.

Why a process: chaining, inserting, committing and fsyncing every record on the broker's one
event loop took about a quarter of its CPU (BENCHMARKS.md). Here that work runs on another core,
as a low-priority batch job, one transaction for whatever the broker has sent since the last.
The broker (``broker.audit.pipe``) sends batches of records on this process's stdin and waits
for the acknowledgement on its stdout; nothing else can write to those pipes.

Per transaction: give each record its place in the chain (seq, the previous hash, its own
hash), insert them, sign a checkpoint when one is due, commit, and acknowledge "committed".
With durability ``fsync``, batches that asked for it are acknowledged "durable" only after the
log is fsynced. Any failure (a full disk, a read-only or locked file) rolls the transaction
back and is acknowledged as a failure with SQLite's message: the broker then refuses the call.

Run by the broker: ``python -m broker.audit.writer --database data/audit.db --durability fsync
[--key data/audit.key] [--log-calls]``. It stops at the end of its input (the broker closed the
pipe or died).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from broker.audit.checkpoints import Signer
from broker.audit.wire import COMMITTED, DURABLE, FAILED, Batch, decode_batches, encode_ack
from broker.signing import AgentCredentials
from broker.storage.audit_ledger import AuditLedger
from broker.storage.group_commit import WAL_CHECKPOINT_COMMITS
from broker.storage.interfaces import Sign
from broker.storage.records import STEP_EVENTS, AuditRow, CheckpointRow, StoreError, record_hash

log = logging.getLogger("broker.audit.writer")

CHECKPOINT_EVERY = 1000  # records; and at least every checkpoint_interval (settings)
WRITER_NICENESS = 10  # a lower priority than the broker's (see _yield_to_the_broker)

_COMPACT = json.JSONEncoder(separators=(",", ":"))


def log_line(row: AuditRow) -> str | None:
    """The JSON line logged for a request's final record (none for a step on a call's way,
    or for steps outside a request, such as an approval)."""
    if row.event in STEP_EVENTS or row.rpc == "event":
        return None
    return _COMPACT.encode(
        {
            "call_id": row.call_id,
            "event": row.event,
            "rpc": row.rpc,
            "agent": row.agent,
            "tool": row.tool,
            "task_id": row.task_id,
            "decision": row.decision,
            "reason": row.reason,
            "upstream_status": row.upstream_status,
            "latency_ms": round(row.latency_us / 1000, 3),
        }
    )


class Chain:
    """The head of the hash chain and the checkpoint schedule (this process owns both)."""

    def __init__(self, ledger: AuditLedger, signer: Sign | None) -> None:
        self._signer = signer
        last, mark = ledger.head()
        self.seq, self.head = last or (0, "")
        if mark and mark.seq > self.seq:  # everything was pruned: go on from the anchor
            self.seq, self.head = mark.seq, mark.head_hash
        self.since_checkpoint = self.seq - (mark.seq if mark else 0)
        self.last_checkpoint_ms = mark.ts_ms if mark else int(time.time() * 1000)

    def link(self, values: Sequence[Any]) -> tuple[Any, ...]:
        """A record's values with its seq, the previous hash and its own hash."""
        self.seq += 1
        chained = (*values, self.seq, self.head)
        self.head = record_hash(chained)
        self.since_checkpoint += 1
        return (*chained, self.head)

    def checkpoint_due(self, after_s: float | None) -> bool:
        """A checkpoint every CHECKPOINT_EVERY records, or when asked and the last is old."""
        if self._signer is None or self.since_checkpoint == 0:
            return False
        if self.since_checkpoint >= CHECKPOINT_EVERY:
            return True
        now = int(time.time() * 1000)
        return after_s is not None and now - self.last_checkpoint_ms >= after_s * 1000

    def checkpoint(self, ledger: AuditLedger, kind: str = "periodic") -> None:
        """Sign the head, inside the current transaction."""
        assert self._signer is not None
        now = int(time.time() * 1000)
        key_id, signature = self._signer(self.seq, self.head, now)
        ledger.insert_checkpoint(CheckpointRow(self.seq, self.head, now, kind, key_id, signature))
        self.since_checkpoint, self.last_checkpoint_ms = 0, now

    def state(self) -> tuple[int, str, int, int]:
        return self.seq, self.head, self.since_checkpoint, self.last_checkpoint_ms

    def restore(self, state: tuple[int, str, int, int]) -> None:
        """Undo the links of a transaction that was rolled back."""
        self.seq, self.head, self.since_checkpoint, self.last_checkpoint_ms = state


class Writer:
    """Writes batches: one transaction for everything that arrived together."""

    def __init__(
        self, database: Path, durability: str, signer: Sign | None, calls_log: int | None = None
    ) -> None:
        self._calls_log = calls_log  # where each request's JSON line goes (the broker: stderr)
        self._ledger = AuditLedger(database)
        self._chain = Chain(self._ledger, signer)
        self._fsync = durability == "fsync"
        self._commits = 0

    def write(self, batches: list[Batch], send: Callable[[bytes], None]) -> None:
        """Write, then acknowledge each batch: committed, then durable (after the fsync); then
        log each request's JSON line (so the log never shows a call the trail lacks)."""
        rows = self._commit(batches)
        if isinstance(rows, str):
            send(b"".join(encode_ack(b.batch_id, FAILED, rows) for b in batches))
            return
        waiting = [b for b in batches if b.durable and self._fsync]
        done = DURABLE if not self._fsync else COMMITTED
        send(b"".join(encode_ack(b.batch_id, done) for b in batches))
        if waiting:
            try:
                self._ledger.sync()
            except StoreError as exc:
                send(b"".join(encode_ack(b.batch_id, FAILED, str(exc)) for b in waiting))
            else:
                send(b"".join(encode_ack(b.batch_id, DURABLE) for b in waiting))
        self._log(rows)
        self._commits += 1
        if self._commits >= WAL_CHECKPOINT_COMMITS:  # the log copied between commits
            self._commits = 0
            self._ledger.copy_log()

    def _log(self, rows: list[tuple[Any, ...]]) -> None:
        if self._calls_log is None:
            return
        lines = [line for line in map(log_line, map(AuditRow._make, rows)) if line is not None]
        if lines:
            with contextlib.suppress(OSError):  # a closed stderr must not stop the trail
                _write_all(self._calls_log, ("\n".join(lines) + "\n").encode())

    def _commit(self, batches: list[Batch]) -> list[tuple[Any, ...]] | str:
        """The records as chained and committed, or what went wrong."""
        before = self._chain.state()
        try:
            with self._ledger.transaction():
                rows = [self._chain.link(values) for b in batches for values in b.rows]
                if rows:
                    self._ledger.insert(rows)
                after = min(
                    (b.checkpoint_after for b in batches if b.checkpoint_after), default=None
                )
                if self._chain.checkpoint_due(after):
                    self._chain.checkpoint(self._ledger)
        except StoreError as exc:
            self._chain.restore(before)
            return str(exc)
        return rows

    def close(self) -> None:
        """Sign the head as it is at the stop (so a tail cut later is caught even if the
        broker never runs again), copy the log into the database, close."""
        try:
            if self._chain.checkpoint_due(0.0):
                with self._ledger.transaction():
                    self._chain.checkpoint(self._ledger, "stop")
                self._ledger.sync()
        except StoreError as exc:
            log.warning("the audit writer's last checkpoint failed: %s", exc)
        self._ledger.copy_log()
        self._ledger.close()


def serve(writer: Writer, source: int, sink: int) -> None:
    """Read batches until the input ends; everything read at once is one transaction."""
    pending = b""

    def send(data: bytes) -> None:
        _write_all(sink, data)

    while True:
        chunk = os.read(source, 1 << 20)
        if not chunk:
            return
        batches, pending = decode_batches(pending + chunk)
        if batches:
            writer.write(batches, send)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _yield_to_the_broker() -> None:
    """Run as a batch job at lower priority: when the machine is busy, waking this process
    must not preempt the broker's event loop (measured: on 2 cores it did, and cost the
    loop more than the writing itself). Records wait a little longer meanwhile, and the next
    transaction takes all of them. Best effort: where the system refuses, run as we are."""
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    with contextlib.suppress(OSError):
        os.nice(WRITER_NICENESS)


def _signer(key_file: Path | None) -> Sign | None:
    return Signer(AgentCredentials.load(key_file)) if key_file is not None else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", type=Path, required=True)
    parser.add_argument("--durability", choices=("fsync", "process"), default="fsync")
    parser.add_argument("--key", type=Path, help="the audit key that signs checkpoints")
    parser.add_argument(
        "--log-calls", action="store_true", help="write each request's JSON line to stderr"
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the broker's: it closes our input
    logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        log_to = sys.stderr.fileno() if args.log_calls else None
        writer = Writer(args.database, args.durability, _signer(args.key), log_to)
    except (StoreError, OSError, ValueError) as exc:
        log.error("cannot open the audit database %s: %s", args.database, exc)
        return 1
    # Ready at the broker's own priority (it waits for us to start), then a batch job.
    _yield_to_the_broker()
    try:
        serve(writer, sys.stdin.fileno(), sys.stdout.fileno())
    except BrokenPipeError:
        pass  # the broker is gone; what was committed stays
    finally:
        writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
