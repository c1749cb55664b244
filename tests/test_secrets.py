"""Credentials that never leave the broker: injected into the outgoing request only, redacted
from everything that comes back, stored encrypted, scoped per agent."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import time
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from broker import errors
from broker.cli import main
from broker.client import ToolError
from broker.errors import ConfigError
from broker.policy.check import check_folders
from broker.testing import FakeUpstream, RecordedRequest, Reply, Workspace
from broker.vault import RECHECK_S
from tests.state_sql import stored_bytes

SECRET = "s3cr3t-Value/with+chars=="
MASTER = base64.b64encode(b"k" * 32).decode()
ENV = {"BROKER_MASTER_KEY": MASTER}


def forms(value: str) -> list[str]:
    raw = value.encode()
    return [
        value,
        base64.b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode(),
        quote(value, safe=""),
        quote_plus(value),
        raw.hex(),
        raw.hex().upper(),
    ]


def set_secret(
    ws: Workspace, name: str, value: str, monkeypatch: pytest.MonkeyPatch, verb: str = "set"
) -> int:
    monkeypatch.setenv("BROKER_MASTER_KEY", MASTER)
    monkeypatch.setattr("sys.stdin", io.StringIO(value + "\n"))
    return main(["secrets", verb, name, "--config", str(ws.root / "broker.yaml")])


@pytest.fixture
def keyed(ws: Workspace, upstream: FakeUpstream) -> Workspace:
    ws.tool(
        "vault",
        base_url=upstream.url,
        allow_private_network=True,
        credentials={"api_key": {"header": "Authorization", "value": "Bearer {secret}"}},
        actions={"read": {"effect": "read", "method": "GET", "path": "/read"}},
    )
    ws.settings()  # writes broker.yaml for the CLI
    return ws


def test_the_secret_reaches_the_upstream_header_and_nowhere_else(
    keyed: Workspace,
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    assert set_secret(keyed, "vault-key", SECRET, monkeypatch) == 0
    agent = keyed.agent("reader", grants=["vault.read"], credentials={"vault.api_key": "vault-key"})

    def echo(request: RecordedRequest) -> Reply:  # a careless upstream that echoes everything
        leaked = {f"form{i}": form for i, form in enumerate(forms(SECRET))}
        leaked["header"] = request.headers.get("authorization", "")
        return Reply(200 if request.query == [] else 404, leaked)

    upstream.respond = echo
    with keyed.broker(env=ENV) as broker, broker.client(agent) as client:
        result = client.call("vault.read", {})
        upstream.respond = lambda request: Reply(400, {"error": f"bad key {SECRET}"})
        with pytest.raises(ToolError) as failed:
            client.call("vault.read", {})

    assert upstream.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    everything = result.result_json + failed.value.result.result_json + caplog.text
    for row in keyed.audit():
        everything += json.dumps(row._asdict())
    for form in forms(SECRET):
        assert form not in everything
    assert "[REDACTED:vault-key]" in result.result_json
    assert json.loads(result.result_json)["header"] == "Bearer [REDACTED:vault-key]"
    assert "[REDACTED:vault-key]" in failed.value.result.result_json
    raw = stored_bytes(keyed)
    for form in forms(SECRET):
        assert form.encode() not in raw, f"{form} is in the database"
    detail = json.loads(keyed.audit(result.call_id)[-1].detail)
    (used,) = detail["credentials"]
    assert (used["slot"], used["secret"], len(used["fingerprint"])) == ("api_key", "vault-key", 64)


def test_an_agent_uses_only_the_secret_its_policy_maps(
    keyed: Workspace, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_secret(keyed, "key-a", "value-for-a", monkeypatch)
    set_secret(keyed, "key-b", "value-for-b", monkeypatch)
    a = keyed.agent("agent-a", grants=["vault.read"], credentials={"vault.api_key": "key-a"})
    b = keyed.agent("agent-b", grants=["vault.read"], credentials={"vault.api_key": "key-b"})
    with keyed.broker(env=ENV) as broker:
        for credentials in (a, b):
            with broker.client(credentials) as client:
                client.call("vault.read", {})
    assert [r.headers["authorization"] for r in upstream.requests] == [
        "Bearer value-for-a",
        "Bearer value-for-b",
    ]

    # the same secret for two agents is refused unless both say it is shared
    keyed.agent("agent-b", grants=["vault.read"], credentials={"vault.api_key": "key-a"})
    problems = [
        p.message for p in check_folders(keyed.root / "policies", keyed.root / "tools").errors
    ]
    assert any("secret 'key-a' is also mapped for agent-b" in m for m in problems)
    for agent in ("agent-a", "agent-b"):
        keyed.agent(
            agent,
            grants=["vault.read"],
            credentials={"vault.api_key": {"secret": "key-a", "shared": True}},
        )
    assert check_folders(keyed.root / "policies", keyed.root / "tools").errors == []


def test_a_grant_without_its_credential_or_a_wrong_slot_is_refused(keyed: Workspace) -> None:
    keyed.agent("reader", grants=["vault.read"])
    keyed.agent("other", grants=["invoices.list"], credentials={"vault.token": "x-key"})
    messages = [
        p.message for p in check_folders(keyed.root / "policies", keyed.root / "tools").errors
    ]
    assert any("needs credential slot 'vault.api_key'" in m for m in messages)
    assert any("unknown credential slot 'vault.token' (vault has: api_key)" in m for m in messages)
    with pytest.raises(ConfigError, match="credential slot"):
        keyed.broker().start()


def test_a_sealed_broker_refuses_credentials_and_serves_the_rest(
    keyed: Workspace, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_secret(keyed, "vault-key", SECRET, monkeypatch)
    agent = keyed.agent(
        "reader", grants=["vault.read", "invoices.list"], credentials={"vault.api_key": "vault-key"}
    )
    with keyed.broker(env={}) as broker, broker.client(agent) as client:
        with pytest.raises(errors.Sealed, match="sealed") as sealed:
            client.call("vault.read", {})
        assert sealed.value.status_code.name == "FAILED_PRECONDITION"
        assert client.call("invoices.list", {}).state == "DONE"
    assert [r.path for r in upstream.requests] == ["/invoices"]


def test_a_running_broker_sees_rotation_and_deletion(
    keyed: Workspace,
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    set_secret(keyed, "vault-key", "first-value", monkeypatch)
    agent = keyed.agent("reader", grants=["vault.read"], credentials={"vault.api_key": "vault-key"})
    with keyed.broker(env=ENV) as broker, broker.client(agent) as client:
        client.call("vault.read", {})
        assert set_secret(keyed, "vault-key", "second-value", monkeypatch, "rotate") == 0
        time.sleep(RECHECK_S + 0.1)  # a change reaches the running broker within RECHECK_S
        client.call("vault.read", {})
        assert (
            main(["secrets", "delete", "vault-key", "--config", str(keyed.root / "broker.yaml")])
            == 0
        )
        time.sleep(RECHECK_S + 0.1)  # the deletion reaches it within RECHECK_S as well
        with pytest.raises(errors.SecretNotSet, match="broker secrets set vault-key"):
            client.call("vault.read", {})
    assert [r.headers["authorization"] for r in upstream.requests] == [
        "Bearer first-value",
        "Bearer second-value",
    ]
    capsys.readouterr()


def test_the_secrets_command(
    keyed: Workspace, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(keyed.root / "broker.yaml")
    assert set_secret(keyed, "alpha", "value-alpha", monkeypatch) == 0
    assert set_secret(keyed, "alpha", "again", monkeypatch) == 2  # set does not overwrite
    assert "use: broker secrets rotate" in capsys.readouterr().err
    assert set_secret(keyed, "beta", "ab", monkeypatch) == 2  # too short
    assert set_secret(keyed, "Bad Name", "value", monkeypatch) == 2
    assert main(["secrets", "list", "--config", config, "--format", "json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["name"] == "alpha"
    assert entry["last_used"] is None
    assert "value-alpha" not in json.dumps(entry)
    monkeypatch.delenv("BROKER_MASTER_KEY")
    assert main(["secrets", "set", "gamma", "--config", config]) == 2
    assert "no master key" in capsys.readouterr().err
    assert main(["secrets", "delete", "nope", "--config", config]) == 2


def test_an_operator_can_tell_whether_a_value_was_used(
    keyed: Workspace,
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    set_secret(keyed, "vault-key", SECRET, monkeypatch)
    agent = keyed.agent("reader", grants=["vault.read"], credentials={"vault.api_key": "vault-key"})
    with keyed.broker(env=ENV) as broker, broker.client(agent) as client:
        call_id = client.call("vault.read", {}).call_id
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO(SECRET))
    assert main(["audit", "fingerprint", "--config", str(keyed.root / "broker.yaml")]) == 0
    assert f"used by call {call_id} (reader vault.read" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO("some-other-value"))
    main(["audit", "fingerprint", "--config", str(keyed.root / "broker.yaml")])
    assert "no audited call used this value" in capsys.readouterr().out


def test_query_and_basic_auth_slots(
    ws: Workspace, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws.tool(
        "api",
        base_url=upstream.url,
        allow_private_network=True,
        credentials={"token": {"query": "access_token"}, "login": {"basic": True}},
        actions={"read": {"effect": "read", "method": "GET", "path": "/r"}},
    )
    ws.settings()
    set_secret(ws, "api-token", "tok-123456", monkeypatch)
    set_secret(ws, "api-login", "robot:pa ss", monkeypatch)
    agent = ws.agent(
        "reader",
        grants=["api.read"],
        credentials={"api.token": "api-token", "api.login": "api-login"},
    )
    upstream.respond = lambda request: Reply(
        body={"auth": request.headers["authorization"], "url": request.path}
    )
    with ws.broker(env=ENV) as broker, broker.client(agent) as client:
        result = client.call("api.read", {})
    (request,) = upstream.requests
    assert request.query == [("access_token", "tok-123456")]
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"robot:pa ss").decode()
    assert json.loads(result.result_json)["auth"] == "Basic [REDACTED:api-login]"


def test_known_token_shapes_in_upstream_output_are_redacted_with_a_finding(
    client: object, upstream: FakeUpstream
) -> None:
    github = "ghp_" + "a1B2" * 9
    upstream.respond = lambda request: Reply(
        body={
            "note": f"deploy with {github}",
            "aws": "AKIAABCDEFGHIJKLMNOP",
            "slack": "xoxb-1234567890-abcdefghij",
            "key": "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----",
        }
    )
    result = client.call("invoices.list", {})  # type: ignore[attr-defined]
    body = json.loads(result.result_json)
    assert body == {
        "note": "deploy with [REDACTED:github-token]",
        "aws": "[REDACTED:aws-access-key]",
        "slack": "[REDACTED:slack-token]",
        "key": "[REDACTED:private-key]",
    }
    kinds = sorted(f.detail.split(" ")[1] for f in result.findings if f.kind == "secret_redacted")
    assert kinds == ["aws-access-key", "github-token", "private-key", "slack-token"]


def test_a_master_key_file_readable_by_others_is_refused(ws: Workspace, tmp_path: Path) -> None:
    key_file = tmp_path / "master.key"
    key_file.write_text(MASTER)
    os.chmod(key_file, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        ws.broker(master_key_file=str(key_file)).start()
    os.chmod(key_file, 0o600)
    with ws.broker(master_key_file=str(key_file)):
        pass
    key_file.write_text("too short")
    with pytest.raises(ConfigError, match="base64 of 32 random bytes"):
        ws.broker(master_key_file=str(key_file)).start()
