"""The `broker` command as a user runs it: keygen, then a call through a real broker."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from broker.cli import main
from broker.testing import FakeUpstream, Reply, Workspace


def test_keygen_writes_a_private_key_and_prints_the_policy_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "agent.key"
    assert main(["keygen", "--agent", "metrics-agent", "--out", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    printed = capsys.readouterr().out
    (entry,) = yaml.safe_load(printed.split("\n", 1)[1])
    assert entry["id"].startswith("metrics-agent-")
    assert len(entry["ed25519"]) == 44
    assert main(["keygen", "--agent", "metrics-agent", "--out", str(out)]) == 2  # no overwrite


def test_a_generated_key_works_in_a_policy_and_a_call(
    ws: Workspace, upstream: FakeUpstream, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "reader.key"
    main(["keygen", "--agent", "reader", "--out", str(key)])
    (entry,) = yaml.safe_load(capsys.readouterr().out.split("\n", 1)[1])
    ws.write(
        "policies/reader.yaml",
        {"agent": "reader", "keys": [entry], "grants": [{"tool": "invoices.get"}]},
    )
    upstream.respond = lambda request: Reply(body={"id": "INV-1", "amount": "10.00"})
    with ws.broker() as broker:
        base = [
            "--agent",
            "reader",
            "--key",
            str(key),
            "--target",
            broker.target,
            "--broker-id",
            "broker.test",
        ]
        assert main(["call", *base, "invoices.get", '{"id": "INV-1"}']) == 0
        captured = capsys.readouterr()
        assert '"amount": "10.00"' in captured.out
        assert "DONE (call c" in captured.err

        assert main(["call", *base, "invoices.list", "{}"]) == 1
        assert "TOOL_NOT_GRANTED" in capsys.readouterr().err

        upstream.respond = lambda request: Reply(404, {"error": "no such invoice"})
        assert main(["call", *base, "invoices.get", '{"id": "INV-2"}']) == 3
        assert "no such invoice" in capsys.readouterr().out

        assert main(["tools", *base]) == 0
        assert capsys.readouterr().out.startswith("invoices.get")

    wrong_agent = ["--agent", "someone", "--key", str(key)]
    assert main(["call", *wrong_agent, "invoices.get", "{}"]) == 2
    assert "belongs to agent 'reader'" in capsys.readouterr().err


def test_run_refuses_a_broken_config_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "broker.yaml"
    config.write_text("broker_id: b\nlisten: nowhere\ndata_dir: d\npolicies: p\ntools: t\n")
    assert main(["run", "--config", str(config)]) == 2
    assert f"{config}:2:9: listen: 'nowhere' is not host:port" in capsys.readouterr().err


def test_run_refuses_an_unusable_data_dir_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "tools").mkdir()
    (tmp_path / "occupied").write_text("a file where the data folder should be")
    config = tmp_path / "broker.yaml"
    config.write_text(
        "broker_id: b\nlisten: 127.0.0.1:0\ndata_dir: occupied\npolicies: policies\ntools: tools\n"
    )
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "cannot use data_dir" in err
    assert "Traceback" not in err


def test_a_call_left_waiting_for_a_human_says_so_and_how_to_resume(
    ws: Workspace, upstream: FakeUpstream, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "payer.key"
    main(["keygen", "--agent", "payer", "--out", str(key)])
    (entry,) = yaml.safe_load(capsys.readouterr().out.split("\n", 1)[1])
    policy = {"agent": "payer", "keys": [entry], "grants": [{"tool": "invoices.pay"}]}
    ws.write("policies/payer.yaml", {**policy, "escalate_after": "1s"})
    with ws.broker() as broker:
        base = ["--agent", "payer", "--key", str(key), "--target", broker.target]
        pay = ["invoices.pay", '{"id": "INV-1", "amount": 5}', "--idempotency-key", "k1"]
        assert main(["call", *base, "--broker-id", "broker.test", *pay]) == 5
    captured = capsys.readouterr()
    assert captured.out.startswith("pending: call c")
    assert "broker approve c" in captured.out
    assert "Traceback" not in captured.err
    assert upstream.requests == []


def test_an_admin_key_that_is_not_one_is_refused_with_its_line(
    ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    ws.settings()  # the workspace's config, with its folders
    config = ws.root / "broker.yaml"
    text = config.read_text() + "admin_keys:\n  - {name: ops, id: ops-1, ed25519: not-a-key}\n"
    config.write_text(text)
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{config}:" in err
    assert "not an Ed25519 public key" in err
    assert "Traceback" not in err


def test_an_export_read_only_in_part_ends_quietly(ws: Workspace, upstream: FakeUpstream) -> None:
    agent = ws.agent("reader", grants=["invoices.list"], limits={"loop": {"repeats": 10_000}})
    with ws.broker() as broker, broker.client(agent) as client:
        for n in range(300):
            client.call("invoices.list", {"limit": n})
    command = [sys.executable, "-m", "broker", "audit", "export", "--config", "broker.yaml"]
    export = subprocess.Popen(command, cwd=ws.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert export.stdout is not None and export.stderr is not None
    first = export.stdout.readline()  # then the reader goes away, like `| head -1`
    export.stdout.close()
    err = export.stderr.read().decode()
    assert export.wait(60) == 0
    assert first.startswith(b"{")
    assert "Traceback" not in err and "BrokenPipe" not in err
