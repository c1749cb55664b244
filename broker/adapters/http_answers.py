"""What an upstream's HTTP answer means for the agent: a result, the tool's own failure, or
"slow down" (a 429, or a 200 that says so in its body) that must never pass for success.

Pure functions of the answer, apart from the network: the broker runs them on the event loop
for a small answer and in a worker process for a big one (``broker.workers``).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from broker import errors
from broker.manifest import HttpTool, SoftLimitRule
from broker.outcome import Outcome
from broker.v1 import broker_pb2 as pb

DEFAULT_RETRY_AFTER = 1.0
MAX_RETRY_AFTER = 300.0


@dataclass(frozen=True)
class HttpResponse:
    """What came back: the status, the headers and the body (at most the tool's size cap)."""

    status: int
    headers: dict[str, str]
    body: bytes
    content_type: str


def interpret(tool: HttpTool, response: HttpResponse) -> Outcome:
    """What an answer means. A 429, or any answer the manifest's ``rate_limited_when`` rules
    recognise (a 200 with ``{"error": "rate_limited"}``), is UPSTREAM_RATE_LIMITED: never a
    result. 5xx is UPSTREAM_UNAVAILABLE. 2xx is DONE; any other status is the tool's own
    failure, TOOL_ERROR, with its body. Remaining 0 with a reset asks every caller to rest."""
    status = response.status
    text = response.body.decode("utf-8", errors="replace")
    if status == 429 or any(_matches(rule, status, text) for rule in tool.rate_limited_when):
        wait = response.headers.get("retry-after") or _reset(tool, response)
        raise errors.UpstreamRateLimited(
            f"{tool.name} answered {status} meaning 'too many requests'; wait before calling "
            "it again",
            retry_after=retry_after(wait),
        )
    if status >= 500:
        wait = response.headers.get("retry-after")  # a 503 may say when to come back
        raise errors.UpstreamUnavailable(
            f"{tool.name} answered {status}; the call did not complete",
            retry_after=retry_after(wait) if wait else None,
        )
    state = pb.CallResult.DONE if 200 <= status < 300 else pb.CallResult.TOOL_ERROR
    rest = 0.0
    remaining = response.headers.get(tool.rate_limit_headers.remaining.lower(), "").strip()
    if remaining == "0" and _reset(tool, response):
        rest = retry_after(_reset(tool, response))
    return Outcome(
        state=state, result_json=body_as_json(response), upstream_status=status, upstream_rest=rest
    )


def _reset(tool: HttpTool, response: HttpResponse) -> str | None:
    """The reset header as seconds from now (it may be epoch seconds or a delay)."""
    value = response.headers.get(tool.rate_limit_headers.reset.lower(), "").strip()
    if not value.replace(".", "", 1).isdigit():
        return None
    number = float(value)
    seconds = number - time.time() if number > 1_000_000_000 else number
    return str(max(0, int(seconds + 0.999)))


def _matches(rule: SoftLimitRule, status: int, text: str) -> bool:
    if rule.status is not None and rule.status != status:
        return False
    if rule.body_regex is not None and not re.search(rule.body_regex, text[:65536]):
        return False
    if rule.json_path is not None:
        found, value = _json_at(text, rule.json_path)
        if not found:
            return False
        if rule.equals is not None and value != rule.equals:
            return False
        if rule.contains is not None and rule.contains not in str(value):
            return False
    return True


_STEP = re.compile(r"\.([A-Za-z0-9_-]+)|\[([0-9]+)\]")


def _json_at(text: str, path: str) -> tuple[bool, Any]:
    try:
        value: Any = json.loads(text)
    except ValueError:
        return False, None
    for name, index in _STEP.findall(path[1:]):
        if name and isinstance(value, dict) and name in value:
            value = value[name]
        elif index and isinstance(value, list) and int(index) < len(value):
            value = value[int(index)]
        else:
            return False, None
    return True, value


def body_as_json(response: HttpResponse) -> str:
    """The body as JSON text: a JSON body as it came, anything else as one JSON string."""
    text = response.body.decode("utf-8", errors="replace")
    if "json" in response.content_type and text:
        try:
            json.loads(text)
        except ValueError:
            pass  # labelled JSON but is not: hand it on as text
        else:
            return text
    return json.dumps(text, ensure_ascii=False)


def retry_after(value: str | None, now: float | None = None) -> float:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), capped; a default
    when it is missing or unreadable."""
    if not value:
        return DEFAULT_RETRY_AFTER
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return DEFAULT_RETRY_AFTER
    return min(max(0.0, when - (time.time() if now is None else now)), MAX_RETRY_AFTER)
