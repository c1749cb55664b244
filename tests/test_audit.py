"""The audit trail: every tamper case is caught and named, the broker fails closed when it
cannot write, every query filter works, the story of a call reads whole, metrics scrape."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import sqlite3
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker import errors
from broker.audit.checkpoints import Signer
from broker.cli import main
from broker.client import ApprovalPending, ToolError
from broker.signing import AgentCredentials
from broker.storage import sqlite_audit
from broker.storage.group_commit import WAL_CHECKPOINT_COMMITS
from broker.storage.records import AUDIT_COLUMNS, AuditRow, record_hash
from broker.storage.sqlite_connection import migrate
from broker.storage.sqlite_schema import MIGRATIONS, audit_database
from broker.testing import FakeUpstream, Reply, RunningBroker, Workspace, read_audit
from tests.trail_helpers import append as _append
from tests.trail_helpers import cli_verify, on_state, on_trail, opened_trail, places, prune_at
from tests.trail_helpers import verify_at as audit_verify

NO_LOOPS = {"loop": {"repeats": 10_000}}


def traffic(ws: Workspace, upstream: FakeUpstream) -> dict[str, Any]:
    """A little of everything, through a real broker: reads, a refusal, a tool error, a
    pending write decided by an operator."""
    reader = ws.agent("reader", grants=["invoices.list", "invoices.get"], limits=NO_LOOPS)
    payer = ws.agent("payer", grants=["invoices.pay"], limits=NO_LOOPS)
    ids: dict[str, Any] = {}
    with ws.broker(audit_checkpoint_interval="100ms") as broker:
        with broker.client(reader) as client:
            ids["read"] = client.call("invoices.list", {"supplier": "A"}, task_id="t1").call_id
            for n in range(4):
                client.call("invoices.list", {"limit": n}, task_id="t1")
            with pytest.raises(errors.ToolNotGranted) as refused:
                client.call("invoices.pay", {"id": "1", "amount": 1}, task_id="t2")
            ids["refused"] = refused.value.call_id
            upstream.respond = lambda request: Reply(404, {"error": "none"})
            with pytest.raises(ToolError) as failed:
                client.call("invoices.get", {"id": "X"}, task_id="t2")
            ids["tool_error"] = failed.value.result.call_id
            upstream.respond = lambda request: Reply(body={"ok": True})
        with broker.client(payer) as client, broker.admin() as admin:
            with pytest.raises(ApprovalPending) as asked:
                client.call(
                    "invoices.pay",
                    {"id": "1", "amount": 5},
                    idempotency_key="p1",
                    task_id="t3",
                    intent="pay it",
                    wait_for_approval=False,
                )
            ids["paid"] = asked.value.call_id
            admin.decide(asked.value.call_id, approve=True, reason="fine")
            # the approved call runs in the background; Await answers once its final record
            # is in the trail (never between its stored outcome and that record)
            client.await_call(asked.value.call_id, wait_ms=5000)
        ids["broker"] = broker
    return ids


@pytest.fixture
def trail(ws: Workspace, upstream: FakeUpstream) -> dict[str, Any]:
    return traffic(ws, upstream)


def test_an_intact_trail_verifies(
    ws: Workspace, trail: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = cli_verify(ws, capsys)
    assert code == 0, out
    assert out.startswith("ok: ")
    rows = ws.audit()
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    assert all(r.prev_hash == p.hash for p, r in itertools.pairwise(rows))


@pytest.mark.parametrize(
    ("statements", "expected"),
    [
        (["UPDATE audit SET decision = 'allowed!' WHERE seq = 3"], "record 3 was changed"),
        (["UPDATE audit SET latency_us = latency_us + 1 WHERE seq = 5"], "record 5 was changed"),
        (["DELETE FROM audit WHERE seq = 4"], "record 4 is missing"),
        (
            [
                "UPDATE audit SET seq = 1000 WHERE seq = 2",
                "UPDATE audit SET seq = 2 WHERE seq = 3",
                "UPDATE audit SET seq = 3 WHERE seq = 1000",
            ],
            "record 2 does not follow record 1",
        ),
    ],
)
def test_each_tamper_is_named(
    ws: Workspace,
    trail: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    statements: list[str],
    expected: str,
) -> None:
    on_trail(ws, *statements)
    code, out = cli_verify(ws, capsys)
    assert code == 1
    assert out.startswith("TAMPERED: ")
    assert expected in out


def test_a_truncated_tail_is_caught_by_the_checkpoints(
    ws: Workspace, trail: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(ws.root / "broker.yaml")
    assert main(["audit", "checkpoint", "--config", config]) == 0
    kept = json.loads(capsys.readouterr().out)
    assert kept["seq"] > 3
    assert len(kept["public_key"]) == 44
    (ws.root / "kept.json").write_text(json.dumps(kept))

    on_trail(ws, f"DELETE FROM audit WHERE seq > {kept['seq'] - 2}")
    code, out = cli_verify(ws, capsys)
    assert code == 1
    assert f"records {kept['seq'] - 1} to {kept['seq']} are gone" in out
    assert f"found in {places(ws).marks}" in out

    # cutting the checkpoints too: broker.db keeps the heads
    on_trail(ws, "DELETE FROM audit_checkpoints")
    code, out = cli_verify(ws, capsys)
    assert code == 1
    assert f"found in {places(ws).heads}" in out and "truncated tail" in out
    # and cutting those as well fools both places, not a checkpoint kept elsewhere
    on_state(ws, "DELETE FROM audit_heads")
    assert cli_verify(ws, capsys)[0] == 0
    code, out = cli_verify(ws, capsys, "--checkpoint", str(ws.root / "kept.json"))
    assert code == 1
    assert "truncated tail" in out and f"found in {ws.root / 'kept.json'}" in out


def test_a_forged_checkpoint_is_caught(
    ws: Workspace, trail: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    on_trail(ws, "UPDATE audit_checkpoints SET head_hash = 'ff' || substr(head_hash, 3)")
    code, out = cli_verify(ws, capsys)
    assert code == 1
    assert "bad signature" in out


def test_prune_keeps_a_signed_anchor_so_the_rest_verifies(
    ws: Workspace, trail: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    rows = ws.audit()
    cut = rows[len(rows) // 2]
    config = str(ws.root / "broker.yaml")
    when = _iso(cut.ts_ms + 1)
    assert main(["audit", "prune", "--before", when, "--config", config]) == 0
    remaining = ws.audit()
    assert remaining
    assert remaining[0].ts_ms > cut.ts_ms
    assert cli_verify(ws, capsys)[0] == 0
    first = remaining[0].seq
    on_trail(ws, f"UPDATE audit SET intent = 'x' WHERE seq = {first}")
    code, out = cli_verify(ws, capsys)
    assert code == 1
    assert f"record {first} was changed" in out


@pytest.mark.sqlite_only  # holds audit.db's SQLite write lock
def test_a_prune_that_cannot_write_says_so_and_removes_nothing(
    ws: Workspace, trail: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    before = ws.audit()
    config = ["--config", str(ws.root / "broker.yaml")]
    holder = sqlite3.connect(audit_database(ws.database), isolation_level=None)
    holder.execute("PRAGMA busy_timeout=0")
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the audit database
    try:
        code = main(["audit", "prune", "--before", _iso(before[-1].ts_ms + 1), *config])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    err = capsys.readouterr().err
    assert code == 4
    assert "cannot prune the audit trail: database is locked" in err
    assert "Traceback" not in err
    assert ws.audit() == before
    assert cli_verify(ws, capsys)[0] == 0


@pytest.mark.sqlite_only  # deletes audit.db
def test_a_query_where_the_audit_database_is_gone_says_so(
    ws: Workspace, trail: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{audit_database(ws.database)}{suffix}").unlink(missing_ok=True)
    code = main(["audit", "query", "--config", str(ws.root / "broker.yaml")])
    err = capsys.readouterr().err
    assert code == 4
    assert f"there is no audit trail at {audit_database(ws.database)}" in err


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def test_every_query_filter(
    ws: Workspace, trail: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    config = ["--config", str(ws.root / "broker.yaml")]

    def query(*flags: str) -> list[dict[str, Any]]:
        assert main(["audit", "query", *config, "--format", "jsonl", *flags]) == 0
        out = capsys.readouterr().out
        return [json.loads(line) for line in out.splitlines()]

    everything = query()
    assert {r["agent"] for r in query("--agent", "payer")} == {"payer"}
    assert {r["tool"] for r in query("--tool", "invoices.get")} == {"invoices.get"}
    assert {r["task_id"] for r in query("--task", "t2")} == {"t2"}
    assert {r["decision"] for r in query("--status", "refused")} == {"refused"}
    assert [r["call_id"] for r in query("--reason", "TOOL_NOT_GRANTED")] == [trail["refused"]]
    assert {r["event"] for r in query("--event", "approved")} == {"approved"}
    middle = everything[len(everything) // 2]["ts_ms"]
    since = query("--since", _iso(middle))
    until = query("--until", _iso(middle))
    assert len(since) + len(until) == len(everything)
    assert query("--since", "1h") == everything
    assert query("--until", "1h") == []
    assert main(["audit", "query", *config, "--limit", "2"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 2
    assert main(["audit", "query", *config, "--since", "yesterday-ish"]) == 2


def test_export_and_tail(
    ws: Workspace, trail: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    config = ["--config", str(ws.root / "broker.yaml")]
    assert main(["audit", "export", *config]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(ws.audit())
    assert all(json.loads(line)["hash"] for line in lines)
    assert main(["audit", "tail", *config, "-n", "3", "-f", "--for", "1s"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_show_tells_the_whole_story_of_a_call(
    ws: Workspace, trail: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "show", trail["paid"], "--config", str(ws.root / "broker.yaml")]) == 0
    story = capsys.readouterr().out
    assert "agent payer" in story
    assert "intent: pay it" in story
    assert '"amount": 5' in story
    assert "stored call: done, decided by admin:local-admin (fine)" in story
    assert "why a human was asked: a write" in story
    for step in (
        "received: received",
        "pending: pending",
        "approved: approved - by admin:local-admin",
        "decided: allowed",
        "executed: done - upstream 200",
    ):
        assert step in story


def test_each_step_is_a_record_with_its_facts(ws: Workspace, trail: dict[str, Any]) -> None:
    story = {r.event: r for r in ws.audit(trail["paid"])}
    # the agent's Await of the call is part of its story too
    assert list(story) == ["received", "pending", "approved", "decided", "executed", "await"]
    arrived = story["received"]
    assert (arrived.agent, arrived.tool, arrived.task_id, arrived.intent) == (
        "payer",
        "invoices.pay",
        "t3",
        "pay it",
    )
    assert json.loads(arrived.arguments) == {"id": "1", "amount": 5}
    assert arrived.key_id and len(arrived.args_digest) == 64
    # an approved call's execution records the arguments that ran (as stored for approval)
    assert json.loads(story["executed"].arguments) == {"id": "1", "amount": 5}
    # a call that runs at once keeps them once, in the record of its arrival
    read = {r.event: r for r in ws.audit(trail["read"])}
    assert list(read) == ["received", "decided", "executed"]
    assert json.loads(read["received"].arguments) == {"supplier": "A"}
    assert read["decided"].arguments == read["executed"].arguments == ""
    assert len(read["executed"].args_digest) == 64  # and the digest names them
    assert story["executed"].result_size == len('{"ok": true}')
    assert len(story["executed"].result_digest) == 64
    assert story["decided"].cost == 1
    assert story["approved"].detail == '{"note":"fine","by":"admin:local-admin"}'
    assert all(r.policy_hash for r in ws.audit(trail["read"]))


def test_one_json_log_line_per_request(
    ws: Workspace, upstream: FakeUpstream, capfd: pytest.CaptureFixture[str]
) -> None:
    agent = ws.agent("reader", grants=["invoices.list"])
    with ws.broker() as broker, broker.client(agent) as client:
        call_id = client.call("invoices.list", {}).call_id
        with pytest.raises(errors.ToolNotGranted) as refused:
            client.call("invoices.pay", {})
    # the audit writer (a process sharing our stderr) writes them once the records are in
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line[:1] == "{"]
    mine = [line for line in lines if line.get("call_id") == call_id]
    assert len(mine) == 1  # not the decision to run it: one line a request
    assert (mine[0]["event"], mine[0]["upstream_status"]) == ("executed", 200)
    (other,) = [line for line in lines if line.get("call_id") == refused.value.call_id]
    assert (other["decision"], other["reason"]) == ("refused", "TOOL_NOT_GRANTED")
    # the head the writer signed at the stop is in the log too, where deleting audit.db
    # cannot reach it
    (head,) = [line for line in lines if line["event"] == "audit_checkpoint"]
    last = ws.audit()[-1]
    assert (head["kind"], head["seq"], head["head_hash"]) == ("stop", last.seq, last.hash)
    assert head["broker_id"] == ws.broker_id


def test_the_metrics_endpoint(ws: Workspace, upstream: FakeUpstream) -> None:
    agent = ws.agent("reader", grants=["invoices.list"], limits=NO_LOOPS)
    with ws.broker(http_listen="127.0.0.1:0") as broker, broker.client(agent) as client:
        client.call("invoices.list", {})
        with pytest.raises(errors.ToolNotGranted):
            client.call("invoices.pay", {})
        with urllib.request.urlopen(broker.http_url + "/metrics", timeout=5) as response:  # noqa: S310
            text = response.read().decode()
    assert (
        'toolbroker_calls_total{agent="reader",outcome="done",reason="-",rpc="call",'
        'tool="invoices.list"} 1.0'
    ) in text
    assert (
        'toolbroker_calls_total{agent="reader",outcome="refused",reason="TOOL_NOT_GRANTED",'
        'rpc="call",tool="invoices.pay"} 1.0'
    ) in text
    assert 'toolbroker_upstream_responses_total{status="200",tool="invoices"} 1.0' in text
    assert 'toolbroker_stage_seconds_count{stage="execute"} 1.0' in text
    assert "toolbroker_pending_approvals 0.0" in text
    assert 'toolbroker_request_seconds_bucket{le="+Inf",rpc="call"} 2.0' in text


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 4 MiB tmpfs of our own, to fill up (mounting needs root, as CI runs)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    path = Path(tempfile.mkdtemp(prefix="broker-disk-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
        path.rmdir()


def _audit_is_refused(client: Any, upstream: FakeUpstream) -> None:
    before = len(upstream.requests)
    for arguments in ({"supplier": "x"}, {"supplier": "y"}):
        with pytest.raises(errors.AuditUnavailable) as refused:
            client.call("invoices.list", arguments)
        assert refused.value.status_code.name == "UNAVAILABLE"
    with pytest.raises(errors.AuditUnavailable):
        client.call("invoices.pay", {"id": "1", "amount": 1}, idempotency_key="k")
    assert len(upstream.requests) == before  # nothing reached the tool


def _agent(ws: Workspace) -> Any:
    return ws.agent(
        "reader",
        grants=[
            "invoices.list",
            {"tool": "invoices.pay", "approval": "never", "no_approval_because": "test"},
        ],
        limits=NO_LOOPS,
    )


@pytest.mark.sqlite_only  # fills the file system under audit.db
def test_no_call_runs_when_the_disk_is_full(
    ws: Workspace, upstream: FakeUpstream, small_disk: Path
) -> None:
    agent = _agent(ws)
    with (
        RunningBroker(ws.settings(data_dir=str(small_disk))) as broker,
        broker.client(agent) as client,
    ):
        assert client.call("invoices.list", {}).state == "DONE"
        filler = small_disk / "filler"
        # unbuffered: nothing left to flush (and fail) when the file closes
        with filler.open("wb", buffering=0) as handle, contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * 65536)
        _audit_is_refused(client, upstream)
        filler.unlink()
        assert client.call("invoices.list", {"supplier": "z"}).state == "DONE"  # recovers


@pytest.mark.sqlite_only  # makes audit.db read-only
def test_no_call_runs_when_the_database_turns_read_only(
    ws: Workspace, upstream: FakeUpstream
) -> None:
    if os.geteuid() != 0:
        pytest.skip("chattr +i needs root (CI runs as root)")
    agent = _agent(ws)
    trail = audit_database(ws.database)
    files = [str(trail), f"{trail}-wal"]
    with ws.broker() as broker, broker.client(agent) as client:
        assert client.call("invoices.list", {}).state == "DONE"
        # root ignores file modes; the immutable flag stops even root's open descriptors
        subprocess.run(["chattr", "+i", *files], check=True)
        try:
            _audit_is_refused(client, upstream)
        finally:
            subprocess.run(["chattr", "-i", *files], check=True)
        assert client.call("invoices.list", {"supplier": "z"}).state == "DONE"  # recovers


@pytest.mark.sqlite_only  # holds audit.db's SQLite write lock
def test_no_call_runs_while_another_process_holds_the_audit_database_locked(
    ws: Workspace, upstream: FakeUpstream, capsys: pytest.CaptureFixture[str]
) -> None:
    agent = _agent(ws)
    with ws.broker() as broker, broker.client(agent) as client:
        assert client.call("invoices.list", {}).state == "DONE"
        # a backup tool or a careless `sqlite3 audit.db` holding the write lock: the writer
        # waits its busy timeout, then gives up, and the calls stop before their tools
        holder = sqlite3.connect(audit_database(ws.database), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            _audit_is_refused(client, upstream)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert client.call("invoices.list", {"supplier": "z"}).state == "DONE"  # recovers
    # the refused batches were rolled back whole: the chain has no gap where they were
    assert cli_verify(ws, capsys)[0] == 0


def test_the_database_log_stays_bounded_and_every_record_stays(tmp_path: Path) -> None:
    # SQLite's own checkpoints are off (they would run inside a commit); the audit writer
    # must keep the write-ahead log from growing with every commit (~20 KB each).
    path = tmp_path / "broker.db"
    log = f"{audit_database(path)}-wal"
    commits = 12 * WAL_CHECKPOINT_COMMITS
    row = _record(1)

    async def write() -> int:
        largest = 0
        async with opened_trail(path) as trail:
            for _ in range(commits):  # one commit each: the worst case for the log
                await trail.append(row)
                largest = max(largest, os.stat(log).st_size)
        return largest

    largest = asyncio.run(write())

    assert largest < commits * 20_000 / 4  # without checkpoints it reaches ~48 MB
    assert len(read_audit(path)) == commits


def _record(n: int) -> AuditRow:
    return AuditRow(
        ts_ms=1_700_000_000_000 + n,
        call_id=f"c{n}",
        rpc="call",
        agent="a",
        key_id="k",
        nonce=f"n{n}",
        tool="t.x",
        task_id="",
        intent="",
        args_digest="d",
        decision="done",
        reason="",
        upstream_status=200,
        latency_us=1,
        policy_hash="p",
        detail="{}",
        arguments="{}",
        event="executed",
    )


def test_an_older_database_hands_its_trail_to_the_audit_database(tmp_path: Path) -> None:
    # before the audit writer, the chain lived in broker.db: it moves, hashes and all
    path = tmp_path / "broker.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, MIGRATIONS[:8])
    previous = ""
    for seq in (1, 2, 3):
        values = (*_record(seq)[:-3], seq, previous)
        previous = record_hash(values)
        conn.execute(
            f"INSERT INTO audit ({', '.join(AUDIT_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(AUDIT_COLUMNS))})",
            (*values, previous),
        )
    conn.close()

    _append(path, [_record(4)])

    assert [r.call_id for r in read_audit(path)] == ["c1", "c2", "c3", "c4"]
    with sqlite3.connect(path) as old:
        tables = {name for (name,) in old.execute("SELECT name FROM sqlite_master")}
    assert "audit" not in tables
    key = Ed25519PrivateKey.generate().public_key()
    assert audit_verify(path, key).ok  # c4 follows c3 across the move


def test_a_chain_pruned_to_nothing_goes_on_from_its_anchor(tmp_path: Path) -> None:
    path = tmp_path / "broker.db"
    key_file = tmp_path / "audit.key"
    key = AgentCredentials.generate("broker-audit")
    key.save(key_file)
    _append(path, [_record(n) for n in (1, 2, 3)], key_file)
    removed, anchor = prune_at(path, 1_800_000_000_000, Signer(key, "broker.test"))
    assert (removed, anchor and anchor.seq) == (3, 3)

    _append(path, [_record(4)], key_file)  # a new writer, an empty table

    assert [r.seq for r in read_audit(path)] == [4]
    assert audit_verify(path, key.private_key.public_key()).ok


def test_a_long_prune_goes_in_batches_and_ends_as_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # each batch is a short transaction of its own with an anchor at its cut (the writer
    # never waits long); the end is the same as one big prune, and the rest verifies
    monkeypatch.setattr(sqlite_audit, "PRUNE_BATCH", 4)
    path = tmp_path / "broker.db"
    key = AgentCredentials.generate("broker-audit")
    key.save(tmp_path / "audit.key")
    _append(path, [_record(n) for n in range(1, 26)], tmp_path / "audit.key")
    cut = read_audit(path)[18]  # record 19
    removed, anchor = prune_at(path, cut.ts_ms + 1, Signer(key, "broker.test"))
    assert (removed, anchor and anchor.seq, anchor and anchor.head_hash) == (19, 19, cut.hash)
    assert [r.seq for r in read_audit(path)] == list(range(20, 26))
    with sqlite3.connect(audit_database(path)) as conn:
        kinds = conn.execute("SELECT seq, kind FROM audit_checkpoints ORDER BY seq").fetchall()
    assert kinds == [(19, "prune"), (25, "stop")]  # the batches' own anchors gave way
    assert audit_verify(path, key.private_key.public_key()).ok


def test_a_writer_that_dies_is_replaced_and_no_answer_leaves_unrecorded(
    ws: Workspace, upstream: FakeUpstream, capsys: pytest.CaptureFixture[str]
) -> None:
    agent = ws.agent("reader", grants=["invoices.list"], limits=NO_LOOPS)
    writer = f"broker.audit.writer --database {audit_database(ws.database)}"
    answered, refused = [], 0
    with ws.broker() as broker, broker.client(agent) as client:
        answered.append(client.call("invoices.list", {}).call_id)
        subprocess.run(["pkill", "-KILL", "-f", writer], check=True)
        for n in range(50):  # bounded: a new writer starts with the next record
            try:
                answered.append(client.call("invoices.list", {"supplier": f"s{n}"}).call_id)
            except errors.AuditUnavailable:
                refused += 1
            if len(answered) > 3:
                break
    assert len(answered) > 3, f"{refused} calls refused, the writer never came back"
    recorded = {r.call_id for r in ws.audit() if r.event == "executed"}
    assert set(answered) <= recorded
    assert cli_verify(ws, capsys)[0] == 0


def test_many_records_at_once_each_in_the_trail_when_its_append_returns(tmp_path: Path) -> None:
    # records from many calls at once share transactions: whichever way they are batched,
    # each caller is answered only once its own record is committed, and the chain holds
    path = tmp_path / "broker.db"
    key = AgentCredentials.generate("broker-audit")
    key.save(tmp_path / "audit.key")

    async def write() -> list[bool]:
        async with opened_trail(path, tmp_path / "audit.key", "fsync") as trail:

            async def one(n: int) -> bool:
                await asyncio.sleep(n % 7 / 1000)  # arrive spread over a few milliseconds
                await trail.append(_record(n), durable=n % 3 != 0)
                return [r.call_id for r in read_audit(path, f"c{n}")] == [f"c{n}"]

            return await asyncio.gather(*(one(n) for n in range(300)))

    assert all(asyncio.run(write()))
    assert audit_verify(path, key.private_key.public_key()).records == 300


def test_a_clean_stop_signs_the_head_so_a_later_cut_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "broker.db"
    key = AgentCredentials.generate("broker-audit")
    key.save(tmp_path / "audit.key")
    _append(path, [_record(n) for n in range(1, 6)], tmp_path / "audit.key")  # then it stops
    assert audit_verify(path, key.private_key.public_key()).ok

    with sqlite3.connect(audit_database(path)) as conn:
        conn.execute("DELETE FROM audit WHERE seq > 3")

    verdict = audit_verify(path, key.private_key.public_key())
    assert verdict.problem is not None and "records 4 to 5 are gone" in verdict.problem
