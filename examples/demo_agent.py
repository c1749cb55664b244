"""`make demo`: a short scripted agent against the broker that `make run` started.

It shows what an agent sees: a read that succeeds (the broker adds the API key the agent never
sees), a PDF read by a sandboxed tool, a path that tries to leave its folder, a payment that
waits for a human (`broker approve` decides it), a tool it is not granted, a replayed request
and an invalid argument, each refused with its own reason. Exits 1 if anything behaves
otherwise.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

from broker import errors
from broker.client import ApprovalPending, BrokerClient
from broker.devmode import dev_key_path
from broker.settings import load_settings
from broker.signing import AgentCredentials
from broker.v1 import broker_pb2 as pb

HERE = Path(__file__).resolve().parent


def envelope_nonce() -> str:
    """A fresh suffix, so each demo run asks anew."""
    return secrets.token_hex(4)


def step(title: str, action: Callable[[], str], expect: str) -> bool:
    """Run one step and say whether the agent saw what it should."""
    try:
        seen = action()
    except errors.BrokerError as exc:
        seen = f"{exc.reason}: {exc.message}"
    ok = seen.startswith(expect)
    print(f"{'ok ' if ok else 'BAD'} {title}\n      -> {seen}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=HERE / "broker.yaml")
    args = parser.parse_args()
    settings = load_settings(args.config)
    key = dev_key_path(settings.data_dir, "invoice-agent")
    if not key.exists():
        print(f"no dev key at {key}: start the broker first with `make run`", file=sys.stderr)
        return 1
    credentials = AgentCredentials.load(key)
    client = BrokerClient(settings.listen, credentials, broker_id=settings.broker_id, timeout=10)

    def read() -> str:
        result = client.call(
            "invoices.list", {"status": "open"}, task_id="demo-1", intent="list open invoices"
        )
        return f"DONE: {len(result.result['invoices'])} open invoices (call {result.call_id})"

    def read_pdf() -> str:
        result = client.call("docs.to_text", {"path": "invoice-0001.pdf"}, task_id="demo-1")
        return f"DONE: {' '.join(str(result.result).split())!r} (pdftotext in a sandbox)"

    def escape_folder() -> str:
        client.call("docs.to_text", {"path": "../../../etc/passwd"}, task_id="demo-1")
        return "DONE (the path should have been refused)"

    def pay_large() -> str:
        try:
            client.call(
                "invoices.pay",
                {"id": "INV-0002", "amount": "4999.99"},
                idempotency_key=f"demo-pay-{envelope_nonce()}",
                task_id="demo-1",
                intent="pay Globex",
                wait_for_approval=False,
            )
        except ApprovalPending as pending:
            return f"PENDING_APPROVAL: {pending.note.split(';')[0]}"
        return "DONE (a payment over 1000.00 should have waited for a human)"

    def send_mail() -> str:
        client.call(
            "mail.send", {"to": "a@example.com", "subject": "hi", "body": "hi"}, task_id="demo-1"
        )
        return "DONE (the policy should not have allowed this)"

    def replay() -> str:
        envelope = credentials.envelope(settings.broker_id)
        envelope.call.CopyFrom(
            pb.CallRequest(tool="invoices.get", arguments_json='{"id": "INV-0001"}')
        )
        signed = credentials.sign(envelope)
        client.send("Call", signed)  # the first send is accepted
        client.send("Call", signed)  # the same bytes again
        return "DONE (the replay should have been refused)"

    def invalid() -> str:
        client.call("invoices.get", {"id": 42}, task_id="demo-1")
        return "DONE (the argument should have been refused)"

    try:
        results = [
            step("a read that is granted", read, "DONE"),
            step("a supplier PDF read in the sandbox", read_pdf, "DONE"),
            step("a path out of the documents folder", escape_folder, "INVALID_ARGUMENTS"),
            step("a payment over 1,000.00 waits for a human", pay_large, "PENDING_APPROVAL"),
            step("a tool that is not granted", send_mail, "TOOL_NOT_GRANTED"),
            step("the same signed request sent twice", replay, "REPLAYED_NONCE"),
            step("an argument of the wrong type", invalid, "INVALID_ARGUMENTS"),
        ]
    except errors.Unavailable as exc:
        print(f"cannot reach the broker at {settings.listen}: {exc.message}", file=sys.stderr)
        print("start it with `make run` in another terminal", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
