"""The audit writer: a process of its own that owns ``audit.db`` and writes the hash chain.

Why a process: chaining, inserting, committing and fsyncing every record on the broker's one
event loop took about a quarter of its CPU (BENCHMARKS.md). Here that work runs on another core,
as a low-priority batch job, one transaction for whatever the broker has sent since the last.
The broker (``broker.audit.pipe``) sends batches of records on this process's stdin and waits
for the acknowledgement on its stdout; nothing else can write to those pipes.

Per transaction: give each record its place in the chain (seq, the previous hash, its own
hash), insert them, sign a checkpoint when one is due, commit, and acknowledge "committed".
A checkpoint, once committed, is also kept where deleting audit.db does not delete it: in
broker.db (``--heads``), as a JSON line on stderr (the broker's log) and with every witness
(``--witnesses``, posted from threads of their own, never holding a batch).
With durability ``fsync``, batches that asked for it are acknowledged "durable" only after the
log is fsynced. Any failure (a full disk, a read-only or locked file) rolls the transaction
back and is acknowledged as a failure with SQLite's message: the broker then refuses the call.

Run by the broker: ``python -m broker.audit.writer --database data/audit.db --durability fsync
[--key data/audit.key --broker-id ID] [--heads data/broker.db | --state-url-env VAR]
[--witnesses JSON] [--log-calls]``. With the state on PostgreSQL (``--state-url-env``), the
trail and its heads are there instead: one chain that every replica's writer extends, a batch
at a time (``broker.storage.pg_audit_ledger``). It ignores SIGINT and SIGTERM (a stop of the
whole process group, as Ctrl-C or systemd send, reaches the broker too, which then closes the
pipe) and stops at the end of its input (the broker closed the pipe, or died): either way it
signs the head first.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from broker.audit.checkpoints import Checkpoint, Signer
from broker.audit.wire import (
    COMMITTED,
    DURABLE,
    FAILED,
    WITNESS,
    Batch,
    decode_batches,
    encode_ack,
)
from broker.audit.witness_posting import Posters, WitnessState
from broker.audit.witnesses import Witness, witness_from
from broker.signing import AgentCredentials
from broker.storage.audit_ledger import AuditLedger
from broker.storage.group_commit import WAL_CHECKPOINT_COMMITS
from broker.storage.interfaces import ChainHead, CheckpointKeeper, Sign, TrailLedger
from broker.storage.records import STEP_EVENTS, AuditRow, CheckpointRow, StoreError, record_hash
from broker.storage.sqlite_heads import HeadsLedger

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

    def __init__(self, ledger: TrailLedger, signer: Sign | None) -> None:
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

    def checkpoint(self, ledger: TrailLedger, kind: str = "periodic") -> CheckpointRow:
        """Sign the head, inside the current transaction."""
        assert self._signer is not None
        now = int(time.time() * 1000)
        mark = self._signer(self.seq, self.head, now, kind)
        ledger.insert_checkpoint(mark)
        self.since_checkpoint, self.last_checkpoint_ms = 0, now
        return mark

    def state(self) -> ChainHead:
        return self.seq, self.head, self.since_checkpoint, self.last_checkpoint_ms

    def restore(self, state: ChainHead) -> None:
        """Undo the links of a transaction that was rolled back, or take the head another
        writer of a shared chain left."""
        self.seq, self.head, self.since_checkpoint, self.last_checkpoint_ms = state


class Heads:
    """Where each signed checkpoint goes besides audit.db: broker.db, the log (stderr), the
    witnesses. A place that fails is logged; the checkpoint stands in the others."""

    def __init__(self, ledger: CheckpointKeeper | None, posters: Posters | None) -> None:
        self._ledger = ledger
        self._posters = posters

    def publish(self, row: CheckpointRow) -> None:
        """Keep a committed checkpoint in every place."""
        mark = Checkpoint.of(row)
        if self._ledger is not None:
            try:
                self._ledger.add(row)
            except StoreError as exc:
                log.error(
                    "the audit head at record %d is not kept with the state: %s", row.seq, exc
                )
        with contextlib.suppress(OSError):  # a closed stderr must not stop the trail
            _write_all(sys.stderr.fileno(), (mark.line() + "\n").encode())
        if self._posters is not None:
            self._posters.put(mark)

    def close(self) -> None:
        """Give the witnesses a moment to take what they have; let go of broker.db."""
        if self._posters is not None:
            self._posters.stop()
        if self._ledger is not None:
            self._ledger.close()


class Writer:
    """Writes batches: one transaction for everything that arrived together."""

    def __init__(
        self,
        ledger: TrailLedger,
        durability: str,
        signer: Sign | None,
        calls_log: int | None = None,
        heads: Heads | None = None,
    ) -> None:
        self._calls_log = calls_log  # where each request's JSON line goes (the broker: stderr)
        self._ledger = ledger
        self._chain = Chain(self._ledger, signer)
        self._heads = heads or Heads(None, None)
        self._fsync = durability == "fsync"
        self._commits = 0

    def write(self, batches: list[Batch], send: Callable[[bytes], None]) -> None:
        """Write, then acknowledge each batch: committed, then durable (after the fsync); then
        log each request's JSON line (so the log never shows a call the trail lacks)."""
        committed = self._commit(batches)
        if isinstance(committed, str):
            send(b"".join(encode_ack(b.batch_id, FAILED, committed) for b in batches))
            return
        rows, mark = committed
        waiting = [b for b in batches if b.durable and self._fsync]
        done = DURABLE if not self._fsync else COMMITTED
        send(b"".join(encode_ack(b.batch_id, done) for b in batches))
        synced = True
        # a head leaves the machine only once what it signs is on disk: else a power loss
        # would look, to verify, like a cut tail
        if waiting or (mark is not None and self._fsync):
            try:
                self._ledger.sync()
            except StoreError as exc:
                synced = False
                send(b"".join(encode_ack(b.batch_id, FAILED, str(exc)) for b in waiting))
                if mark is not None:
                    log.error("fsync failed; the checkpoint stays in audit.db only: %s", exc)
            else:
                send(b"".join(encode_ack(b.batch_id, DURABLE) for b in waiting))
        self._log(rows)
        if mark is not None and synced:
            self._heads.publish(mark)
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

    def _commit(
        self, batches: list[Batch]
    ) -> tuple[list[tuple[Any, ...]], CheckpointRow | None] | str:
        """The records as chained and committed, with the checkpoint signed with them if
        one was due, or what went wrong."""
        before = self._chain.state()
        mark = None
        try:
            with self._ledger.transaction() as shared:
                if shared is not None:
                    self._chain.restore(shared)
                storable = self._ledger.storable
                rows = [self._chain.link(storable(v)) for b in batches for v in b.rows]
                if rows:
                    self._ledger.insert(rows)
                after = min(
                    (b.checkpoint_after for b in batches if b.checkpoint_after), default=None
                )
                if self._chain.checkpoint_due(after):
                    mark = self._chain.checkpoint(self._ledger)
                if shared is not None:
                    self._ledger.keep_head(self._chain.state())
                # a head leaves only once what it signs is on disk (see write)
                self._ledger.commit_durably(mark is not None or any(b.durable for b in batches))
        except StoreError as exc:
            self._chain.restore(before)
            return str(exc)
        return rows, mark

    def close(self) -> None:
        """Sign the head as it is at the stop (so a tail cut later is caught even if the
        broker never runs again), copy the log into the database, close."""
        try:
            mark = None
            with self._ledger.transaction() as shared:
                if shared is not None:
                    self._chain.restore(shared)
                if self._chain.checkpoint_due(0.0):
                    mark = self._chain.checkpoint(self._ledger, "stop")
                    if shared is not None:
                        self._ledger.keep_head(self._chain.state())
            if mark is not None:
                self._ledger.sync()
                self._heads.publish(mark)
        except StoreError as exc:
            log.error("the audit writer's last checkpoint failed: %s", exc)
        self._heads.close()
        self._ledger.copy_log()
        self._ledger.close()


class Sink:
    """The pipe back to the broker: acknowledgements from the main thread, witness states
    from the posters' threads, each message whole."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()

    def send(self, data: bytes) -> None:
        """Write all of ``data`` (OSError if the broker is gone)."""
        with self._lock:
            _write_all(self._fd, data)

    def witness_state(self, state: WitnessState) -> None:
        """Tell the broker how a witness is doing (for its metrics)."""
        self.send(encode_ack(0, WITNESS, json.dumps(dataclasses.asdict(state))))


def serve(writer: Writer, source: int, send: Callable[[bytes], None]) -> None:
    """Read batches until the input ends; everything read at once is one transaction."""
    pending = b""
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


def _signer(key_file: Path | None, broker_id: str) -> Sign | None:
    return Signer(AgentCredentials.load(key_file), broker_id) if key_file is not None else None


def _heads(args: argparse.Namespace, sink: Sink) -> Heads:
    witnesses: list[Witness] = [
        witness_from(config, args.broker_id) for config in json.loads(args.witnesses)
    ]
    posters = Posters(witnesses, sink.witness_state) if witnesses else None
    ledger: CheckpointKeeper | None = None
    if args.state_url_env:
        # psycopg takes 130 ms to import: only a writer whose state is on PostgreSQL pays it
        pg_heads = importlib.import_module("broker.storage.pg_heads")
        ledger = pg_heads.PgHeadsLedger(os.environ[args.state_url_env])
    elif args.heads:
        ledger = HeadsLedger(args.heads)
    return Heads(ledger, posters)


def _trail(args: argparse.Namespace) -> TrailLedger:
    if args.state_url_env:
        pg_ledger = importlib.import_module("broker.storage.pg_audit_ledger")
        shared: TrailLedger = pg_ledger.PgAuditLedger(
            os.environ[args.state_url_env], durable=args.durability == "fsync"
        )
        return shared
    return AuditLedger(args.database)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", type=Path, required=True)
    parser.add_argument("--durability", choices=("fsync", "process"), default="fsync")
    parser.add_argument("--key", type=Path, help="the audit key that signs checkpoints")
    parser.add_argument("--broker-id", default="", help="the broker whose chain this is")
    parser.add_argument("--heads", type=Path, help="broker.db: where checkpoints are kept too")
    parser.add_argument(
        "--state-url-env",
        help="or: the variable holding the state's PostgreSQL URL (the trail and its heads "
        "go there, one chain shared by every replica)",
    )
    parser.add_argument("--witnesses", default="[]", help="the witnesses' settings, as JSON")
    parser.add_argument(
        "--log-calls", action="store_true", help="write each request's JSON line to stderr"
    )
    args = parser.parse_args(argv)
    # A stop of the whole process group is the broker's to handle: it closes our input once
    # its last records are out, and we sign the head then. Dying here would leave it unsigned.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    sink = Sink(sys.stdout.fileno())
    try:
        log_to = sys.stderr.fileno() if args.log_calls else None
        signer = _signer(args.key, args.broker_id)
        writer = Writer(_trail(args), args.durability, signer, log_to, _heads(args, sink))
    except (StoreError, OSError, ValueError, KeyError) as exc:
        log.error("cannot start the audit writer: %s", exc)
        return 1
    # Ready at the broker's own priority (it waits for us to start), then a batch job.
    _yield_to_the_broker()
    try:
        serve(writer, sys.stdin.fileno(), sink.send)
    except BrokenPipeError:
        pass  # the broker is gone; what was committed stays
    finally:
        writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
