"""However the broker is stopped, the audit writer signs the chain's head: a signal to the
whole process group (systemd's default, Ctrl-C in a terminal) or the broker killed outright.
The writer never outlives the broker."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from broker.cli import main
from broker.client import BrokerClient
from broker.testing import FakeUpstream, Workspace
from tests.broker_process import bound_port, start_broker, wait_serving
from tests.state_sql import state_sql
from tests.trail_helpers import on_trail, places, trail_sql

STOP_S = 30.0


def writer_pids(broker_pid: int) -> list[int]:
    """The broker's audit writer processes (its children running broker.audit.writer)."""
    children = Path(f"/proc/{broker_pid}/task/{broker_pid}/children").read_text().split()
    found = []
    for child in children:
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"broker.audit.writer" in command:
            found.append(int(child))
    return found


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie has exited: its parent (killed, or the test) has not reaped it yet
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def serve_and_stop(ws: Workspace, how: str) -> str:
    """Run `broker run` in a process group of its own, make calls, stop it ``how``; its log."""
    agent = ws.agent("reader", grants=["invoices.list"], limits={"loop": {"repeats": 1000}})
    ws.settings(listen="127.0.0.1:0")
    log = ws.root / "broker.log"
    process = start_broker(str(ws.root / "broker.yaml"), log, own_group=True)
    try:
        listen = f"127.0.0.1:{bound_port(process, log)}"
        with BrokerClient(listen, agent, broker_id=ws.broker_id, timeout=15) as client:
            wait_serving(client)
            for n in range(10):
                client.call("invoices.list", {"limit": n})
        writers = writer_pids(process.pid)
        assert writers, "the broker runs an audit writer"
        if how == "kill -9 to the broker":
            os.kill(process.pid, signal.SIGKILL)
        else:
            os.killpg(process.pid, signal.SIGTERM if "SIGTERM" in how else signal.SIGINT)
        process.wait(STOP_S)
        deadline = time.monotonic() + STOP_S
        while not all(gone(pid) for pid in writers) and time.monotonic() < deadline:
            time.sleep(0.05)  # the writer signs and exits once its input closes; bounded
        assert all(gone(pid) for pid in writers), "the audit writer outlived the broker"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    return log.read_text(errors="replace")


@pytest.mark.parametrize(
    "how", ["SIGTERM to the process group", "SIGINT to the process group", "kill -9 to the broker"]
)
def test_the_head_is_signed_at_every_kind_of_stop(
    ws: Workspace, upstream: FakeUpstream, how: str, capsys: pytest.CaptureFixture[str]
) -> None:
    log = serve_and_stop(ws, how)
    records = ws.audit()
    seq, kind, head = trail_sql(
        ws, "SELECT seq, kind, head_hash FROM audit_checkpoints ORDER BY seq DESC LIMIT 1"
    )[0]
    assert (seq, kind, head) == (records[-1].seq, "stop", records[-1].hash)
    # kept outside the trail too: with the state and in the log
    kept = state_sql(ws, "SELECT seq, kind FROM audit_heads ORDER BY id DESC LIMIT 1")[0]
    assert tuple(kept) == (seq, "stop")
    lines = [json.loads(line) for line in log.splitlines() if '"audit_checkpoint"' in line]
    assert (lines[-1]["seq"], lines[-1]["kind"], lines[-1]["head_hash"]) == (seq, "stop", head)

    # so a tail cut after this stop, checkpoints and all, is caught
    on_trail(
        ws,
        f"DELETE FROM audit WHERE seq > {seq - 2}",
        f"DELETE FROM audit_checkpoints WHERE seq > {seq - 2}",
    )
    code = main(["audit", "verify", "--config", str(ws.root / "broker.yaml")])
    out = capsys.readouterr().out
    assert code == 1
    assert f"records {seq - 1} to {seq} are gone" in out
    assert f"found in {places(ws).heads}" in out
