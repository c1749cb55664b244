"""`broker policy ...` as CI and reviewers run it: exit status, formats, and what it says."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from broker.cli import main
from broker.client import ApprovalPending
from broker.commands.policy_commands import SCHEMAS, json_schema
from broker.commands.storage_access import with_audit
from broker.policy.check import check_folders
from broker.policy.replay import replay
from broker.testing import FakeUpstream, Reply, Workspace, await_decision

ROOT = Path(__file__).resolve().parent.parent


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _where(ws: Workspace) -> list[str]:
    return ["--policies", str(ws.root / "policies"), "--tools", str(ws.root / "tools")]


def _trail(ws: Workspace) -> list[str]:
    """Where replay reads the trail: the SQLite file itself, or the broker's config."""
    if ws.database_url:
        return ["--config", str(ws.root / "broker.yaml")]
    return ["--audit", str(ws.database)]


def test_the_repository_policies_pass_check_and_their_own_tests(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    code, out, err = _run(capsys, "policy", "check")
    assert (code, out) == (0, "")
    assert "0 error(s), 0 warning(s)" in err
    code, out, err = _run(capsys, "policy", "test")
    assert code == 0, out
    assert "FAIL" not in out
    assert "0 failed" in err
    assert "0 grant(s) no case exercises" in err


def test_check_reports_every_problem_in_each_format(
    ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    ws.write("policies/a.yaml", "agent: a\ngrants:\n  - tool: invoices.refund\n")
    ws.write("policies/b.yaml", "agent: b\ngrants:\n  - tool: invoices.pay\n    approval: never\n")
    ws.write("policies/c.yaml", "agent: c\ngrant: []\n")
    code, out, _ = _run(capsys, "policy", "check", *_where(ws))
    assert code == 1
    lines = out.splitlines()
    assert any(
        line.endswith(
            "a.yaml:3:11: error: grant 'invoices.refund': invoices has no "
            "action 'refund' (it has: get, list, pay)"
        )
        for line in lines
    )
    assert any(
        "b.yaml:4:15: warning: 'invoices.pay' is a write that runs without a human" in line
        for line in lines
    )
    assert any(
        "c.yaml:2:1: error: grant: unknown key; did you mean 'grants'?" in line for line in lines
    )

    code, out, _ = _run(capsys, "policy", "check", "--format", "github", *_where(ws))
    assert code == 1
    assert f"::error file={ws.root}/policies/a.yaml,line=3,col=11::grant" in out

    code, out, _ = _run(capsys, "policy", "check", "--format", "json", *_where(ws))
    problems = json.loads(out)
    assert {p["severity"] for p in problems} == {"error", "warning"}
    assert len(problems) == 3


def test_an_acknowledged_unattended_write_is_not_a_warning(
    ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    ws.agent(
        "b",
        grants=[
            {
                "tool": "invoices.pay",
                "approval": "never",
                "no_approval_because": "the upstream holds a second check",
            }
        ],
    )
    assert _run(capsys, "policy", "check", *_where(ws))[:2] == (0, "")


def test_check_takes_files_and_folders(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    ws.agent("a", grants=["invoices.list"])
    code, _, err = _run(
        capsys, "policy", "check", str(ws.root / "policies/a.yaml"), str(ws.root / "tools")
    )
    assert code == 0
    assert "1 policies, 1 tools" in err


def test_policy_test_reports_failures_and_unexercised_grants(
    ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    ws.agent("a", grants=["invoices.list", "invoices.get"])
    ws.write(
        "policies/a_test.yaml",
        {
            "cases": [
                {"name": "lists", "tool": "invoices.list", "expect": "allow"},
                {
                    "name": "pays",
                    "tool": "invoices.pay",
                    "arguments": {"id": "1", "amount": 1},
                    "expect": "allow",
                },
            ]
        },
    )
    code, out, err = _run(capsys, "policy", "test", *_where(ws))
    assert code == 1
    assert "  ok   lists" in out
    assert "  FAIL pays: expected allow, got deny TOOL_NOT_GRANTED" in out
    assert "  not exercised: invoices.get (a.yaml grants[1])" in out
    assert "1 passed, 1 failed" in err

    code, out, _ = _run(capsys, "policy", "test", "--format", "json", *_where(ws))
    (report,) = json.loads(out)
    assert [c["passed"] for c in report["cases"]] == [True, False]


def test_explain_names_the_rule(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    ws.agent("a", grants=[{"tool": "invoices.pay", "where": {"amount": {"max": 10}}}])
    code, out, _ = _run(
        capsys,
        "policy",
        "explain",
        "--agent",
        "a",
        *_where(ws),
        "invoices.pay",
        '{"id": "1", "amount": 11}',
    )
    assert code == 0
    assert out.strip() == (
        "deny ARGUMENT_NOT_ALLOWED by a.yaml grants[0]: argument 'amount' = 11 breaks max: "
        "must be at most 10 (a.yaml grants[0])"
    )
    code, out, _ = _run(
        capsys,
        "policy",
        "explain",
        "--agent",
        "a",
        *_where(ws),
        "--format",
        "json",
        "invoices.pay",
        '{"id": "1", "amount": 9}',
    )
    assert json.loads(out)["outcome"] == "approval"


def _policy_set(root: Path, policies: dict[str, object]) -> None:
    (root / "policies").mkdir(parents=True)
    shutil.copytree(ROOT / "tools", root / "tools")
    for agent, policy in policies.items():
        grants = " ".join(g["tool"] for g in policy.get("grants", []))  # type: ignore[attr-defined]
        if "invoices." in grants:  # the repository's invoices tool takes an API key
            policy = {**policy, "credentials": {"invoices.api_key": f"{agent}-key"}}  # type: ignore[dict-item]
        (root / "policies" / f"{agent}.yaml").write_text(yaml.safe_dump(policy))


KEY = "A" * 43 + "="


def test_diff_lists_the_riskiest_changes_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _policy_set(
        tmp_path / "base",
        {
            "invoice-agent": {
                "agent": "invoice-agent",
                "keys": [{"id": "k-old", "ed25519": KEY}],
                "grants": [
                    {"tool": "invoices.list"},
                    {
                        "tool": "invoices.pay",
                        "where": {"amount": {"max": "1000.00"}, "id": {"one_of": ["INV-0001"]}},
                    },
                ],
            },
            "inbox-agent": {"agent": "inbox-agent", "grants": [{"tool": "mail.list_messages"}]},
        },
    )
    _policy_set(
        tmp_path / "head",
        {
            "invoice-agent": {
                "agent": "invoice-agent",
                "keys": [
                    {"id": "k-old", "ed25519": KEY, "status": "revoked"},
                    {"id": "k-new", "ed25519": KEY.replace("A", "B", 1)},
                ],
                "grants": [
                    {
                        "tool": "invoices.pay",
                        "where": {
                            "amount": {"max": "9000.00"},
                            "id": {"one_of": ["INV-0001", "INV-0002"]},
                        },
                        "approval": "never",
                    },
                ],
            },
            "inbox-agent": {
                "agent": "inbox-agent",
                "grants": [{"tool": "mail.list_messages"}, {"tool": "mail.send"}],
            },
            "new-agent": {"agent": "new-agent", "grants": [{"tool": "metrics.*"}]},
        },
    )
    code, out, _ = _run(capsys, "policy", "diff", str(tmp_path / "base"), str(tmp_path / "head"))
    assert code == 0
    lines = [line for line in out.splitlines() if line.startswith(("###", "- "))]
    assert lines[:2] == [
        "### inbox-agent",
        "- **new write**: may now call the write `mail.send` (approval required)",
    ]
    start = lines.index("### invoice-agent")
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("###"))
    section = lines[start:end]
    assert section[1] == (
        "- **less approval**: `invoices.pay`: approval was approval required, now no approval"
    )
    assert "- **widened**: `invoices.pay` argument `amount`: max 1000.00 -> 9000.00" in section
    assert "- **widened**: `invoices.pay` argument `id`: one_of adds INV-0002" in section
    assert "- **key**: new key `k-new` (active)" in section
    assert "- **key**: key `k-old`: active -> revoked" in section
    assert section[-1] == "- **narrowed**: may no longer call `invoices.list`"
    assert "### new-agent" in lines
    assert "- **new read**: may now call the read `metrics.query`" in lines


def test_diff_against_a_git_ref(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _policy_set(tmp_path, {"a": {"agent": "a", "grants": [{"tool": "invoices.list"}]}})
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    (tmp_path / "policies/a.yaml").write_text(
        yaml.safe_dump(
            {
                "agent": "a",
                "grants": [{"tool": "invoices.list"}, {"tool": "invoices.pay"}],
                "credentials": {"invoices.api_key": "a-key"},
            }
        )
    )
    monkeypatch.chdir(tmp_path)
    code, out, _ = _run(capsys, "policy", "diff", "HEAD")
    assert code == 0
    assert "- **new write**: may now call the write `invoices.pay` (approval required)" in out
    code, _, err = _run(capsys, "policy", "diff", "no-such-ref")
    assert code == 2
    assert "git cannot read it" in err


def test_replay_lists_the_calls_whose_decision_would_change(
    ws: Workspace, upstream: FakeUpstream, capsys: pytest.CaptureFixture[str]
) -> None:
    credentials = ws.agent(
        "payer",
        grants=[
            "invoices.list",
            {
                "tool": "invoices.pay",
                "where": {"amount": {"max": 100}},
                "approval": "never",
                "no_approval_because": "test",
            },
        ],
    )
    upstream.respond = lambda request: Reply(body={"ok": True})
    with ws.broker() as broker, broker.client(credentials) as client:
        small = client.call("invoices.pay", {"id": "INV-1", "amount": 50}, idempotency_key="k1")
        large = client.call("invoices.pay", {"id": "INV-2", "amount": 90}, idempotency_key="k2")
        client.call("invoices.list", {})
    # the proposed policy lowers the limit to 60 and drops invoices.list
    ws.write(
        "policies/payer.yaml",
        yaml.safe_dump(
            {
                "agent": "payer",
                "keys": [{"id": credentials.key_id, "ed25519": credentials.public_key_b64}],
                "grants": [
                    {
                        "tool": "invoices.pay",
                        "where": {"amount": {"max": 60}},
                        "approval": "never",
                        "no_approval_because": "test",
                    }
                ],
            }
        ),
    )
    code, out, err = _run(capsys, "policy", "replay", "--since", "1h", *_trail(ws), *_where(ws))
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(
        f"{large.call_id} payer invoices.pay: allow -> deny ARGUMENT_NOT_ALLOWED"
    )
    assert lines[1].endswith(
        "invoices.list: allow -> deny TOOL_NOT_GRANTED: agent 'payer' is "
        "not granted 'invoices.list'"
    )
    assert small.call_id not in out
    assert "3 call(s) re-decided since 1h, 2 would change" in err


def test_replay_finds_the_arguments_of_a_call_that_arrived_before_its_window(
    ws: Workspace, upstream: FakeUpstream
) -> None:
    credentials = ws.agent("payer", grants=["invoices.list"])

    def slowly(request: object) -> Reply:
        time.sleep(0.2)  # the call's final record comes 200 ms after its arrival
        return Reply(body={"ok": True})

    upstream.respond = slowly
    with ws.broker() as broker, broker.client(credentials) as client:
        call_id = client.call("invoices.list", {"supplier": "ACME"}).call_id
    story = {row.event: row for row in ws.audit(call_id)}
    assert story["executed"].arguments == ""  # kept in the received record only
    # a window that starts after the call arrived and before it ended
    since_ms = story["received"].ts_ms + 100
    assert story["executed"].ts_ms >= since_ms
    stricter = ws.root / "stricter"
    shutil.copytree(ws.root / "policies", stricter)
    policy = yaml.safe_load((stricter / "payer.yaml").read_text())
    policy["grants"] = [{"tool": "invoices.list", "where": {"supplier": {"one_of": ["Other"]}}}]
    (stricter / "payer.yaml").write_text(yaml.safe_dump(policy))
    policies = check_folders(stricter, ws.root / "tools").policy_set()

    report = with_audit(ws.loaded(), lambda audit: replay(audit, policies, since_ms))

    assert (report.decided, report.skipped) == (1, 0)
    (changed,) = report.changed
    assert changed.row.call_id == call_id
    assert changed.now.reason == "ARGUMENT_NOT_ALLOWED"


def test_replay_under_the_same_policy_changes_nothing_approved_calls_included(
    ws: Workspace, upstream: FakeUpstream
) -> None:
    credentials = ws.agent("payer", grants=["invoices.list", "invoices.pay"])
    with ws.broker() as broker, broker.client(credentials) as client, broker.admin() as admin:
        client.call("invoices.list", {})
        pay = {"id": "INV-1", "amount": 5}
        with pytest.raises(ApprovalPending) as asked:
            client.call("invoices.pay", pay, idempotency_key="k1", wait_for_approval=False)
        admin.decide(asked.value.call_id, approve=True)
        assert await_decision(client, asked.value.call_id).state == "DONE"
    policies = check_folders(ws.root / "policies", ws.root / "tools").policy_set()

    report = with_audit(ws.loaded(), lambda audit: replay(audit, policies, 0))

    # one verdict per call, the policy's: the approved run's own record is not a second one
    assert (report.decided, report.changed) == (2, [])


def test_schemas_ship_with_the_code_and_are_current() -> None:
    for kind in SCHEMAS:
        shipped = (ROOT / "broker/schemas" / f"{kind}.schema.json").read_text()
        assert shipped == json_schema(kind), "run: broker policy schema --write broker/schemas"
    policy = json.loads(json_schema("policy"))
    assert policy["additionalProperties"] is False
    assert "grants" in policy["properties"]
