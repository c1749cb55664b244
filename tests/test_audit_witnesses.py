"""Witnesses keep every signed checkpoint outside the machine: a loopback HTTP witness, syslog
over UDP and a real MinIO bucket under object lock. A witness that is down never holds a call;
the metrics and verify say what it does not hold yet."""

from __future__ import annotations

import datetime
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest

from broker.testing import FakeUpstream, FakeWitness, Reply, Workspace
from tests.conftest import unavailable
from tests.servers.minio import MinioServer, minio_program
from tests.trail_helpers import cli_verify, on_state, on_trail

NO_LOOPS = {"loop": {"repeats": 10_000}}
WAIT_S = 60.0  # generous: a busy machine; the poster's pause grows to 30 s at most


def reads(ws: Workspace, upstream: FakeUpstream, count: int = 5, **config: Any) -> int:
    """``count`` reads through a broker configured with ``config``, stopped; records."""
    upstream.respond = lambda request: Reply(body={"ok": True})
    agent = ws.agent("reader", grants=["invoices.list"], limits=NO_LOOPS)
    with ws.broker(**config) as broker, broker.client(agent) as client:
        for n in range(count):
            client.call("invoices.list", {"limit": n})
    return len(ws.audit())


def wipe(ws: Workspace) -> None:
    """Every trace of the chain in the data directory: both tables of audit.db, and the
    heads in broker.db."""
    on_trail(ws, "DELETE FROM audit", "DELETE FROM audit_checkpoints")
    on_state(ws, "DELETE FROM audit_heads")


def metric(url: str, name: str, witness: str) -> float | None:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as answer:  # noqa: S310 (loopback)
        text = answer.read().decode()
    for line in text.splitlines():
        if line.startswith(f'{name}{{witness="{witness}"}} '):
            return float(line.rsplit(" ", 1)[1])
    return None


def until(check: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)  # the writer posts from its own threads; bounded


def test_a_witness_that_is_down_holds_no_call_and_gets_its_checkpoints_when_back(
    ws: Workspace, upstream: FakeUpstream, capsys: pytest.CaptureFixture[str]
) -> None:
    upstream.respond = lambda request: Reply(body={"ok": True})
    agent = ws.agent("reader", grants=["invoices.list"], limits=NO_LOOPS)
    config = {"http_listen": "127.0.0.1:0", "audit_checkpoint_interval": "100ms"}
    with FakeWitness() as witness:
        witness.down = True
        config["audit_witnesses"] = [{"kind": "http", "url": witness.url}]
        with ws.broker(**config) as broker, broker.client(agent) as client:
            for n in range(3):  # calls go on while the witness is down
                assert client.call("invoices.list", {"limit": n}).upstream_status == 200
                time.sleep(0.3)  # a few checkpoint intervals
            down = "toolbroker_audit_witness_down"
            waiting = "toolbroker_audit_witness_waiting"
            until(lambda: metric(broker.http_url, down, witness.url) == 1.0, "down in metrics")
            until(lambda: (metric(broker.http_url, waiting, witness.url) or 0) >= 1, "waiting")
            code, out = cli_verify(ws, capsys)
            assert code == 0, out
            assert f"not compared: {witness.url} answered 503" in out
            assert witness.held == []

            witness.down = False
            until(lambda: witness.held, "the witness got the checkpoints once back")
            code, out = cli_verify(ws, capsys)
            assert code == 0, out
            until(lambda: metric(broker.http_url, down, witness.url) == 0.0, "back in metrics")
            until(lambda: metric(broker.http_url, waiting, witness.url) == 0.0, "none waiting")
        records = ws.audit()
        # in order, the last head (signed at the stop, or by the clock just before) last
        assert [m["seq"] for m in witness.held] == sorted(m["seq"] for m in witness.held)
        assert witness.held[-1]["seq"] == records[-1].seq


def test_verify_names_the_checkpoints_a_witness_does_not_hold(
    ws: Workspace, upstream: FakeUpstream, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeWitness() as witness:
        records = reads(ws, upstream, audit_witnesses=[{"kind": "http", "url": witness.url}])
        witness.held.clear()  # it lost them (or never got them)
        code, out = cli_verify(ws, capsys)
    assert code == 0, out
    assert f"{witness.url} does not hold 1 checkpoint(s) yet: records {records}" in out


@pytest.fixture(params=["udp", "unix socket"])
def syslog_receiver(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, list[bytes]]]:
    """A syslog receiver: over UDP on 127.0.0.1, or on a local datagram socket as journald's
    ``/dev/log`` is; (the address to configure, what it received)."""
    received: list[bytes] = []
    if request.param == "udp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        address = str(tmp_path / "log")
        sock.bind(address)
    sock.settimeout(0.2)
    stop = threading.Event()

    def receive() -> None:
        while not stop.is_set():
            try:
                received.append(sock.recv(65536))
            except TimeoutError:
                continue

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    try:
        yield address, received
    finally:
        stop.set()
        thread.join(5)
        sock.close()


def test_a_syslog_witness_keeps_the_head_and_its_log_catches_a_wiped_trail(
    ws: Workspace,
    upstream: FakeUpstream,
    syslog_receiver: tuple[str, list[bytes]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    address, received = syslog_receiver
    witnesses = [{"kind": "syslog", "address": address, "facility": "local0"}]
    records = reads(ws, upstream, audit_witnesses=witnesses)
    until(lambda: received, "a syslog line arrived")
    line = received[-1].decode()
    assert line.startswith("<133>toolbroker-audit[")  # local0 (16) * 8 + notice (5)
    assert f'"seq":{records}' in line and '"kind":"stop"' in line

    kept = tmp_path / "syslog.log"
    kept.write_text("".join(f"Dec  5 07:00:00 host {m.decode()}\n" for m in received))
    wipe(ws)
    code, out = cli_verify(ws, capsys)
    assert code == 0  # with every trace in the data directory gone, only the log knows
    code, out = cli_verify(ws, capsys, "--witness", str(kept))
    assert code == 1
    assert f"found in {kept}" in out and f"at {records} records" in out


@pytest.fixture
def minio(monkeypatch: pytest.MonkeyPatch) -> Iterator[MinioServer]:
    program = minio_program()
    if program is None:
        unavailable("no MinIO server here (make test fetches one: tests/servers/fetch_minio.py)")
    with MinioServer(program) as server:
        # the broker's audit writer finds them as boto3 does, in its environment
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.secret_key)
        yield server


def test_an_s3_witness_keeps_each_head_under_object_lock(
    ws: Workspace, upstream: FakeUpstream, minio: MinioServer, capsys: pytest.CaptureFixture[str]
) -> None:
    s3 = boto3.client(  # this server's keys: boto3's default session keeps the first it saw
        "s3",
        endpoint_url=minio.endpoint,
        region_name="us-east-1",
        aws_access_key_id=minio.access_key,
        aws_secret_access_key=minio.secret_key,
    )
    s3.create_bucket(Bucket="audit-heads", ObjectLockEnabledForBucket=True)
    witness = {
        "kind": "s3",
        "bucket": "audit-heads",
        "endpoint_url": minio.endpoint,
        "lock_days": 1,
    }
    records = reads(ws, upstream, audit_witnesses=[witness])
    listed = s3.list_object_versions(Bucket="audit-heads", Prefix=f"toolbroker/{ws.broker_id}/")
    (stop,) = [v for v in listed["Versions"] if v["Key"].endswith("-stop.json")]
    assert stop["Key"].startswith(f"toolbroker/{ws.broker_id}/{records:015d}-")
    retention = s3.get_object_retention(Bucket="audit-heads", Key=stop["Key"])["Retention"]
    assert retention["Mode"] == "COMPLIANCE"
    assert retention["RetainUntilDate"] > datetime.datetime.now(datetime.UTC)
    with pytest.raises(botocore.exceptions.ClientError):  # not even the bucket's owner
        s3.delete_object(Bucket="audit-heads", Key=stop["Key"], VersionId=stop["VersionId"])

    wipe(ws)
    code, out = cli_verify(ws, capsys)  # the configured witness is read back
    assert code == 1
    assert f"found in s3://audit-heads/toolbroker/{ws.broker_id}/" in out
    assert f"at {records} records" in out
