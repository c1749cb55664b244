"""What crosses the pipe between the broker and its audit writer process.

On the way in, each batch is one frame: its length (``FRAME``) and a pickle of (batch id,
durable, rows, checkpoint_after). On the way out, each acknowledgement is ``ACK`` (batch id,
level, length of the error text) and the error text: FAILED, COMMITTED, then (for a durable
batch, with durability fsync) DURABLE. The same frame with level WITNESS carries a witness's
state instead. Pickle is safe here: the pipe runs between the broker
and the process it started, and nothing else can write to it.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

FRAME = struct.Struct("!I")  # the length of each pickled batch on the way in
ACK = struct.Struct("!QBH")  # batch id, level, length of the error text that follows
FAILED, COMMITTED, DURABLE = 0, 1, 2
WITNESS = 3  # batch id 0: not an acknowledgement, a witness's state (JSON) for the metrics
MAX_ERROR_BYTES = 60_000


@dataclass(frozen=True)
class Batch:
    """Records sent together: ``rows`` are the values of AUDIT_COLUMNS up to ``seq``.
    ``checkpoint_after`` (seconds) asks for a checkpoint if the last is that old."""

    batch_id: int
    durable: bool
    rows: Sequence[Sequence[Any]]
    checkpoint_after: float | None = None


def encode_batch(batch: Batch) -> bytes:
    """A batch as the broker sends it."""
    body = pickle.dumps(
        (batch.batch_id, batch.durable, batch.rows, batch.checkpoint_after),
        protocol=pickle.HIGHEST_PROTOCOL,
    )
    return FRAME.pack(len(body)) + body


def decode_batches(pending: bytes) -> tuple[list[Batch], bytes]:
    """The whole batches at the start of ``pending``, and what is left of it."""
    batches: list[Batch] = []
    while len(pending) >= FRAME.size:
        (size,) = FRAME.unpack_from(pending)
        if len(pending) < FRAME.size + size:
            break
        # the pipe comes from the broker that started this process, and nothing else
        fields = pickle.loads(pending[FRAME.size : FRAME.size + size])  # noqa: S301
        batches.append(Batch(*fields))
        pending = pending[FRAME.size + size :]
    return batches, pending


def encode_ack(batch_id: int, level: int, error: str = "") -> bytes:
    """An acknowledgement as the writer sends it."""
    text = error.encode()[:MAX_ERROR_BYTES]
    return ACK.pack(batch_id, level, len(text)) + text
