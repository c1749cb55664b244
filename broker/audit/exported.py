"""A trail exported whole (``broker audit export --format chain``), for checking elsewhere.

The file is JSON lines: a header naming the format, the broker, the time it was made and the
columns; every record
as a JSON array of its column values in that order (exactly what its hash covers, docs/audit.md);
then the trail's checkpoints, one ``{"checkpoint": {...}}`` a line. ``broker audit verify
--export FILE --key KEY`` checks it with the public key alone.

A witness may hold checkpoints signed after the export was made (the broker went on): those
past the export's end count as a cut only if signed before ``exported_ms``. That time is the
exporter's word: verify prints it, and refuses an export holding records newer than it.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from broker.audit.checkpoints import Checkpoint
from broker.storage.interfaces import AuditReader
from broker.storage.records import AUDIT_COLUMNS, CheckpointRow

FORMAT = "toolbroker-audit-chain"
VERSION = 1
_SEQ = AUDIT_COLUMNS.index("seq")
_TS = AUDIT_COLUMNS.index("ts_ms")


async def export_lines(reader: AuditReader, broker_id: str) -> AsyncIterator[str]:
    """The whole trail as the lines of a chain export."""
    header = {
        "format": FORMAT,
        "version": VERSION,
        "broker_id": broker_id,
        "exported_ms": int(time.time() * 1000),
    }
    yield json.dumps({**header, "columns": list(AUDIT_COLUMNS)}, separators=(",", ":"))
    marks = await reader.checkpoints()  # before the records: none can point past them
    anchors = [m.seq for m in marks if m.kind == "prune"]
    async for row in reader.chain(max(anchors, default=0) + 1):
        yield json.dumps(list(row), ensure_ascii=False, separators=(",", ":"))
    for mark in marks:
        yield json.dumps({"checkpoint": Checkpoint.of(mark).to_json()}, separators=(",", ":"))


class ExportedTrail:
    """A chain export, read into memory, checked like audit.db."""

    def __init__(
        self,
        broker_id: str,
        exported_ms: int,
        rows: list[tuple[Any, ...]],
        marks: list[Checkpoint],
    ) -> None:
        self.broker_id = broker_id
        self.exported_ms = exported_ms
        self._rows = rows
        self._marks = marks

    @classmethod
    def read(cls, path: Path) -> ExportedTrail:
        """Parse a chain export; ValueError saying what is wrong with it."""
        try:
            with path.open(encoding="utf-8") as source:
                return cls._parse(enumerate(source, start=1))
        except OSError as exc:
            raise ValueError(f"cannot read it: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ValueError("not a chain export: it is not UTF-8 text") from None

    @classmethod
    def _parse(cls, lines: Iterator[tuple[int, str]]) -> ExportedTrail:
        first = next(lines, None)
        header = _json(first) if first else None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ValueError(
                f"not a chain export: its first line names no {FORMAT!r} format (make one with "
                "`broker audit export --format chain`)"
            )
        if header.get("columns") != list(AUDIT_COLUMNS):
            raise ValueError("exported by another version of the broker: the columns differ")
        exported_ms = header.get("exported_ms")
        if not isinstance(exported_ms, int):
            raise ValueError("its first line does not say when it was made (exported_ms)")
        rows: list[tuple[Any, ...]] = []
        marks: list[Checkpoint] = []
        for number, line in lines:
            item = _json((number, line))
            if isinstance(item, list) and len(item) == len(AUDIT_COLUMNS):
                rows.append(tuple(item))
            elif isinstance(item, dict) and "checkpoint" in item:
                try:
                    marks.append(Checkpoint.from_json(item["checkpoint"]))
                except ValueError as exc:
                    raise ValueError(f"line {number}: {exc}") from None
            elif line.strip():
                raise ValueError(f"line {number} is neither a record nor a checkpoint")
        late = [row for row in rows if not isinstance(row[_TS], int) or row[_TS] > exported_ms]
        if late:
            raise ValueError(
                f"record {late[0][_SEQ]} is newer than the export itself (exported_ms): the "
                "header was altered"
            )
        return cls(str(header.get("broker_id", "")), exported_ms, rows, marks)

    async def chain(self, from_seq: int) -> AsyncIterator[tuple[Any, ...]]:
        """The records from ``from_seq`` on, in the file's order (a gap is for verify to find)."""
        for row in self._rows:
            if isinstance(row[_SEQ], int) and row[_SEQ] >= from_seq:
                yield row

    async def checkpoints(self) -> list[CheckpointRow]:
        """The checkpoints the export carries."""
        return [mark.row() for mark in self._marks]


class NoTrail:
    """The trail of a data directory whose audit.db is gone: no record, no checkpoint."""

    async def chain(self, from_seq: int) -> AsyncIterator[tuple[Any, ...]]:
        """Nothing."""
        nothing: tuple[tuple[Any, ...], ...] = ()
        for row in nothing:
            yield row

    async def checkpoints(self) -> list[CheckpointRow]:
        """None."""
        return []


def _json(numbered: tuple[int, str]) -> Any:
    number, line = numbered
    if not line.strip():
        return None
    try:
        return json.loads(line)
    except ValueError:
        raise ValueError(f"line {number} is not JSON") from None
