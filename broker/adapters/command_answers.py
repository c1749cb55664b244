"""What a sandboxed command's exit means for the agent: its output as the result, or the
tool's own failure. A pure function of the finished process: the broker runs it on the event
loop for small output and in a worker process for big output (``broker.workers``)."""

from __future__ import annotations

import json

from broker.outcome import Outcome
from broker.sandbox import SandboxResult
from broker.v1 import broker_pb2 as pb


def interpret(result: SandboxResult) -> Outcome:
    """Exit 0 is DONE with stdout (JSON as it came, other text as a JSON string); any other
    exit is TOOL_ERROR with the exit code, stdout and stderr."""
    stdout = result.stdout.decode("utf-8", errors="replace")
    findings = []
    if result.stdout_truncated or result.stderr_truncated:
        findings.append(
            pb.Finding(
                kind="output_truncated", path="$", detail="the tool wrote more than its output cap"
            )
        )
    if result.exit_code == 0:
        return Outcome(result_json=_as_json(stdout), upstream_status=0, findings=findings)
    body = {
        "exit_code": result.exit_code,
        "stdout": stdout,
        "stderr": result.stderr.decode("utf-8", errors="replace"),
    }
    return Outcome(
        state=pb.CallResult.TOOL_ERROR,
        result_json=json.dumps(body, ensure_ascii=False),
        upstream_status=result.exit_code,
        findings=findings,
    )


def _as_json(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        try:
            json.loads(stripped)
        except ValueError:
            pass  # looks like JSON but is not: hand it on as text
        else:
            return stripped
    return json.dumps(text, ensure_ascii=False)
