"""The `broker` command as a user runs it: keygen, then a call through a real broker."""

from __future__ import annotations

import stat
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
