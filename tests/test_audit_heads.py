"""The audit trail survives its own deletion: every signed head is kept in broker.db, in the
log and with a witness, and ``broker audit verify`` holds the chain against all of them.
Each attack is made the way someone with write access to the data directory would make it,
after a real broker served real calls."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker.audit.checkpoints import Signer
from broker.signing import AgentCredentials
from broker.storage.records import AUDIT_COLUMNS, CHECKPOINT_COLUMNS, record_hash
from broker.storage.sqlite_schema import audit_database
from broker.testing import FakeUpstream, FakeWitness, Reply, Workspace
from tests.trail_helpers import cli_verify, on_state, on_trail, places, trail_sql

NO_LOOPS = {"loop": {"repeats": 10_000}}
SEQ, INTENT = AUDIT_COLUMNS.index("seq"), AUDIT_COLUMNS.index("intent")


@pytest.fixture
def witness() -> Iterator[FakeWitness]:
    with FakeWitness() as fake:
        yield fake


def serve_calls(
    ws: Workspace, upstream: FakeUpstream, witness: FakeWitness, pause: float = 0, **config: Any
) -> int:
    """Reads and a write through a real broker with an http witness, stopped cleanly; the
    number of audit records. ``pause``: seconds between the reads."""
    upstream.respond = lambda request: Reply(body={"ok": True})
    payer = ws.agent(
        "payer",
        grants=[
            "invoices.list",
            {"tool": "invoices.pay", "approval": "never", "no_approval_because": "tests"},
        ],
        limits=NO_LOOPS,
    )
    witnesses = [{"kind": "http", "url": witness.url}]
    with ws.broker(audit_witnesses=witnesses, **config) as broker, broker.client(payer) as client:
        for n in range(5):
            client.call("invoices.list", {"limit": n})
            time.sleep(pause)  # time-based checkpoints: let some intervals pass
        client.call("invoices.pay", {"id": "INV-1", "amount": 10}, idempotency_key="pay-1")
    return len(ws.audit())


def test_an_untouched_trail_verifies_against_every_place_its_head_is_kept(
    ws: Workspace,
    upstream: FakeUpstream,
    witness: FakeWitness,
    capsys: pytest.CaptureFixture[str],
) -> None:
    records = serve_calls(ws, upstream, witness)
    stop = witness.held[-1]
    assert (stop["kind"], stop["seq"], stop["broker_id"]) == ("stop", records, ws.broker_id)
    code, out = cli_verify(ws, capsys)
    assert code == 0, out
    assert f"ok: {records} record(s) chained" in out
    assert f"{places(ws).marks} at record {records}" in out
    assert f"{places(ws).heads} at record {records}" in out
    assert f"{witness.url} at record {records}" in out


def test_a_wiped_trail_is_caught(
    ws: Workspace,
    upstream: FakeUpstream,
    witness: FakeWitness,
    capsys: pytest.CaptureFixture[str],
) -> None:
    records = serve_calls(ws, upstream, witness)
    on_trail(ws, "DELETE FROM audit", "DELETE FROM audit_checkpoints")
    code, out = cli_verify(ws, capsys)
    assert code == 1
    assert out.startswith("TAMPERED: the trail was cut: it ends at record 0")
    assert f"at {records} records" in out

    # the heads in broker.db gone too: the witness still holds one
    on_state(ws, "DELETE FROM audit_heads")
    code, out = cli_verify(ws, capsys)
    assert code == 1
    assert f"found in {witness.url}" in out

    # and with no head anywhere, broker.db's calls still say a trail existed
    witness.held.clear()
    code, out = cli_verify(ws, capsys)
    assert code == 1
    named = places(ws)
    assert f"the audit trail is empty ({named.trail}), but {named.heads} records 1 call(s)" in out


def test_a_deleted_trail_file_is_caught(
    ws: Workspace,
    upstream: FakeUpstream,
    witness: FakeWitness,
    capsys: pytest.CaptureFixture[str],
) -> None:
    serve_calls(ws, upstream, witness)
    if ws.database_url:  # the trail's tables dropped, on PostgreSQL
        on_trail(ws, "DROP TABLE audit")
    else:
        audit_database(ws.database).unlink()
    on_state(ws, "DELETE FROM audit_heads")
    witness.held.clear()
    code, out = cli_verify(ws, capsys)
    assert code == 1
    named = places(ws)
    assert f"the audit trail is missing ({named.trail}), but {named.heads} records 1 call(s)" in out


@pytest.mark.sqlite_only  # copies one broker's audit.db over another's
def test_a_trail_replaced_by_a_fresh_brokers_is_caught(
    ws: Workspace,
    upstream: FakeUpstream,
    witness: FakeWitness,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    serve_calls(ws, upstream, witness)
    other = Workspace(tmp_path / "other", broker_id=ws.broker_id)
    other.tool("invoices", **yaml_of_invoices(ws))
    with FakeWitness() as elsewhere:
        serve_calls(other, upstream, elsewhere)
    for suffix in ("", "-wal", "-shm"):  # the file and its log, as SQLite keeps them
        mine = Path(f"{audit_database(ws.database)}{suffix}")
        theirs = Path(f"{audit_database(other.database)}{suffix}")
        mine.unlink(missing_ok=True)
        if theirs.exists():
            shutil.copy(theirs, mine)
    code, out = cli_verify(ws, capsys)
    assert code == 1
    assert (
        f"found in {places(ws).marks} has a bad signature" in out
    )  # signed by the fresh broker's key

    on_trail(ws, "DELETE FROM audit_checkpoints")  # and without its checkpoints
    code, out = cli_verify(ws, capsys)
    assert code == 1
    assert "is not the one the stop checkpoint" in out and f"found in {places(ws).heads}" in out


def yaml_of_invoices(ws: Workspace) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ws.root / "tools/invoices.yaml").read_text())
    data.pop("name")
    return data


@pytest.mark.parametrize("keep_checkpoints_in_the_trail", [True, False])
def test_a_tail_cut_after_a_clean_stop_is_caught(
    ws: Workspace,
    upstream: FakeUpstream,
    witness: FakeWitness,
    capsys: pytest.CaptureFixture[str],
    keep_checkpoints_in_the_trail: bool,
) -> None:
    records = serve_calls(ws, upstream, witness)
    on_trail(ws, f"DELETE FROM audit WHERE seq > {records - 3}")
    if not keep_checkpoints_in_the_trail:  # the careful attacker removes those too
        on_trail(ws, f"DELETE FROM audit_checkpoints WHERE seq > {records - 3}")
    code, out = cli_verify(ws, capsys)
    assert code == 1
    assert f"it ends at record {records - 3}" in out
    assert f"records {records - 2} to {records} are gone" in out
    place = places(ws).marks if keep_checkpoints_in_the_trail else places(ws).heads
    assert f"found in {place}" in out


def test_dropping_the_latest_checkpoint_and_the_records_after_it_is_caught(
    ws: Workspace,
    upstream: FakeUpstream,
    witness: FakeWitness,
    capsys: pytest.CaptureFixture[str],
) -> None:
    serve_calls(ws, upstream, witness, pause=0.2, audit_checkpoint_interval="50ms")
    marks = trail_sql(ws, "SELECT seq FROM audit_checkpoints ORDER BY seq")
    seqs = [int(str(row[0])) for row in marks]
    assert len(seqs) >= 2, "time-based checkpoints were signed while records came in"
    latest, before = seqs[-1], seqs[-2]
    on_trail(
        ws,
        f"DELETE FROM audit WHERE seq > {before}",
        f"DELETE FROM audit_checkpoints WHERE seq > {before}",
    )
    code, out = cli_verify(ws, capsys)
    assert code == 1
    assert f"signed it at {latest} records" in out and f"found in {places(ws).heads}" in out


def rewrite_from(ws: Workspace, seq: int) -> None:
    """Change record ``seq`` and re-chain every record after it, hashes and all."""
    previous = ""
    for row in ws.audit():
        values = list(row)
        if values[SEQ] == seq:
            values[INTENT] = "nothing to see here"
        values[-2] = previous
        values[-1] = record_hash(values[:-1])
        previous = values[-1]
        trail_sql(
            ws,
            "UPDATE audit SET intent = ?, prev_hash = ?, hash = ? WHERE seq = ?",
            (values[INTENT], values[-2], values[-1], values[SEQ]),
        )


def test_a_forked_chain_re_signed_with_another_key_is_caught(
    ws: Workspace,
    upstream: FakeUpstream,
    witness: FakeWitness,
    capsys: pytest.CaptureFixture[str],
) -> None:
    records = serve_calls(ws, upstream, witness)
    rewrite_from(ws, records - 4)
    forger = Signer(AgentCredentials.generate("broker-audit"), ws.broker_id)
    head = ws.audit()[-1]
    forged = forger(head.seq, head.hash, head.ts_ms + 1, "stop")
    on_trail(ws, "DELETE FROM audit_checkpoints")
    columns = ", ".join(CHECKPOINT_COLUMNS)
    marks = ", ".join("?" * len(CHECKPOINT_COLUMNS))
    insert = f"INSERT INTO audit_checkpoints ({columns}) VALUES ({marks})"
    trail_sql(ws, insert, [getattr(forged, column) for column in CHECKPOINT_COLUMNS])
    code, out = cli_verify(ws, capsys)
    assert code == 1
    assert f"found in {places(ws).marks} has a bad signature" in out

    on_trail(ws, "DELETE FROM audit_checkpoints")  # unsigned: the heads kept elsewhere differ
    code, out = cli_verify(ws, capsys)
    assert code == 1
    assert f"record {records} is not the one the stop checkpoint at record {records}" in out
    assert f"found in {places(ws).heads}" in out and "rewritten or replaced" in out
