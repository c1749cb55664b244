"""An auditor checks an exported trail and a witness's checkpoints with the audit public key
alone: from a separate process, with no config and no data directory (it is deleted first),
once with ``broker audit verify --export`` and once with a script of their own that follows
docs/audit.md and imports nothing of the broker."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.cli import main
from broker.testing import FakeUpstream, FakeWitness, Reply, Workspace

# Written from docs/audit.md ("Checking a trail without the broker"), with cryptography only.
AUDITOR_SCRIPT = textwrap.dedent(
    """
    import base64, hashlib, json, sys, urllib.request
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key_file, trail_file, witness_url = sys.argv[1:4]
    key = json.load(open(key_file))
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(key["public_key"]))
    with urllib.request.urlopen(witness_url, timeout=10) as answer:
        marks = json.load(answer)
    for m in marks:
        text = "\\n".join(["toolbroker audit checkpoint v2", m["broker_id"], str(m["seq"]),
                          m["head_hash"], str(m["ts_ms"]), m["kind"]])
        public.verify(base64.b64decode(m["signature"]), text.encode())  # raises if forged
        assert m["broker_id"] == key["broker_id"]
    lines = open(trail_file, encoding="utf-8").read().splitlines()
    header = json.loads(lines[0])
    columns = header["columns"]
    seq_at, prev_at = columns.index("seq"), columns.index("prev_hash")
    heads, previous = {}, ""
    for line in lines[1:]:
        row = json.loads(line)
        if not isinstance(row, list):
            continue
        assert row[prev_at] == previous, f"record {row[seq_at]} does not follow"
        canonical = json.dumps(row[:-1], separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256(canonical.encode()).hexdigest() == row[-1], "changed"
        heads[row[seq_at]] = previous = row[-1]
    newest = max(marks, key=lambda m: m["seq"])
    assert heads.get(newest["seq"]) == newest["head_hash"], "cut or replaced"
    assert "broker" not in sys.modules
    print(f"ok {len(heads)} records, head {newest['seq']} witnessed")
    """
)


@pytest.fixture
def exported(
    ws: Workspace, upstream: FakeUpstream, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Iterator[tuple[Path, FakeWitness, int]]:
    """A broker's trail exported with its public key into a folder of the auditor's, the data
    directory then deleted; (that folder, the witness, the number of records)."""
    upstream.respond = lambda request: Reply(body={"ok": True})
    agent = ws.agent("reader", grants=["invoices.list"], limits={"loop": {"repeats": 1000}})
    auditor = tmp_path / "auditor"
    auditor.mkdir()
    with FakeWitness() as witness:
        witnesses = [{"kind": "http", "url": witness.url}]
        with ws.broker(audit_witnesses=witnesses) as broker, broker.client(agent) as client:
            for n in range(6):
                client.call("invoices.list", {"limit": n}, intent=f"look {n}")
        records = len(ws.audit())
        config = str(ws.root / "broker.yaml")
        capsys.readouterr()
        assert main(["audit", "key", "--config", config]) == 0
        (auditor / "key.json").write_text(capsys.readouterr().out)
        assert main(["audit", "export", "--format", "chain", "--config", config]) == 0
        (auditor / "trail.jsonl").write_text(capsys.readouterr().out)
        shutil.rmtree(ws.root / "data")
        yield auditor, witness, records


def audit(folder: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def verify(folder: Path, witness: FakeWitness, trail: str) -> subprocess.CompletedProcess[str]:
    args = ["audit", "verify", "--export", trail, "--key", "key.json", "--witness", witness.url]
    return audit(folder, "-m", "broker", *args)


def test_an_auditor_verifies_the_export_and_the_witness_with_the_key_alone(
    exported: tuple[Path, FakeWitness, int],
) -> None:
    folder, witness, records = exported
    checked = verify(folder, witness, "trail.jsonl")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"ok: {records} record(s) chained" in checked.stdout
    assert f"{witness.url} at record {records}" in checked.stdout

    own = audit(folder, "-c", AUDITOR_SCRIPT, "key.json", "trail.jsonl", witness.url)
    assert own.returncode == 0, own.stderr
    assert own.stdout.strip() == f"ok {records} records, head {records} witnessed"


def test_an_auditor_catches_an_edited_or_cut_export(
    exported: tuple[Path, FakeWitness, int],
) -> None:
    folder, witness, records = exported
    lines = (folder / "trail.jsonl").read_text().splitlines()
    edited = [line.replace('"look 2"', '"look 3"') for line in lines]
    (folder / "edited.jsonl").write_text("\n".join(edited) + "\n")
    checked = verify(folder, witness, "edited.jsonl")
    assert checked.returncode == 1
    assert checked.stdout.startswith("TAMPERED: record ") and "was changed" in checked.stdout

    # the last two records and every checkpoint of the export gone: the witness knows
    kept = [line for line in lines if line.startswith("[")][:-2]
    (folder / "cut.jsonl").write_text("\n".join([lines[0], *kept]) + "\n")
    checked = verify(folder, witness, "cut.jsonl")
    assert checked.returncode == 1
    assert f"records {records - 1} to {records} are gone" in checked.stdout
    assert f"found in {witness.url}" in checked.stdout

    wrong = json.loads((folder / "key.json").read_text())
    wrong["public_key"] = "j1iVsXJYUIaURj4fh9bfvAUboCTV91IwB0sdCtmr9Aw="
    (folder / "key.json").write_text(json.dumps(wrong))
    checked = verify(folder, witness, "trail.jsonl")
    assert checked.returncode == 1 and "bad signature" in checked.stdout
