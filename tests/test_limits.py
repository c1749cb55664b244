"""Rate limits, upstream back-off (429 and its disguises), retries, circuit breakers, budgets
and loop detection, through a real broker; a real nginx with limit_req at the end."""

from __future__ import annotations

import email.utils
import logging
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker import errors
from broker.client import ToolError
from broker.signing import AgentCredentials
from broker.testing import FakeUpstream, Reply, Workspace
from tests.conftest import unavailable

READ = {
    "effect": "read",
    "method": "GET",
    "path": "/r",
    "arguments": {"type": "object", "properties": {"n": {"type": "integer"}}},
}
WRITE = {
    "effect": "write",
    "method": "POST",
    "path": "/w",
    "arguments": {"type": "object", "properties": {"n": {"type": "integer"}}},
}
NO_LOOPS = {"loop": {"repeats": 10_000}}


def tool(ws: Workspace, upstream: FakeUpstream, **manifest: Any) -> None:
    ws.tool(
        "api",
        base_url=upstream.url,
        allow_private_network=True,
        actions={"read": READ, "write": WRITE},
        **manifest,
    )


def agent(ws: Workspace, name: str = "agent", **policy: Any) -> AgentCredentials:
    policy.setdefault("limits", NO_LOOPS)
    grants = policy.pop(
        "grants",
        ["api.read", {"tool": "api.write", "approval": "never", "no_approval_because": "test"}],
    )
    return ws.agent(name, grants=grants, **policy)


def test_a_local_limit_refuses_or_queues(ws: Workspace, upstream: FakeUpstream) -> None:
    # 2 per 60 s: the second slot frees 30 s after the first call, far longer than any call
    # takes, so the refusal below cannot depend on how fast the first call was (with 2 per
    # 1 s, a first call slower than 0.5 s, e.g. on a busy machine, had freed it already)
    tool(ws, upstream, rate_limit={"requests": 2, "per": "60s"})
    a = agent(ws)
    with ws.broker() as broker, broker.client(a) as client:
        client.call("api.read", {"n": 1})
        with pytest.raises(errors.RateLimited) as limited:
            client.call("api.read", {"n": 2})  # slots are spread: one each 30 s
    # however slowly the first call went (a busy machine), the next slot is ~30 s away
    assert limited.value.retry_after is not None
    assert 20 <= limited.value.retry_after <= 30
    assert limited.value.status_code.name == "RESOURCE_EXHAUSTED"
    assert len(upstream.requests) == 1

    tool(ws, upstream, rate_limit={"requests": 2, "per": "1s", "queue": "5s"})
    with ws.broker() as broker, broker.client(a) as client:
        began = time.monotonic()
        for n in range(4):
            client.call("api.read", {"n": n})  # each waits for its slot
        assert time.monotonic() - began >= 1.4  # 4 calls at 2 a second: 1.5 s
    assert len(upstream.requests) == 5


def test_limits_per_agent_and_tool_and_per_agent(ws: Workspace, upstream: FakeUpstream) -> None:
    tool(ws, upstream)
    slow = agent(
        ws, "slow", grants=[{"tool": "api.read", "rate_limit": {"requests": 1, "per": "10s"}}]
    )
    capped = agent(ws, "capped", limits={"calls_per_minute": 2, **NO_LOOPS})
    with ws.broker() as broker:
        with broker.client(slow) as client:
            client.call("api.read", {})
            with pytest.raises(errors.RateLimited, match=r"api\.read for slow"):
                client.call("api.read", {})
        with broker.client(capped) as client:
            client.call("api.read", {})
            client.call("api.read", {"n": 1})
            with pytest.raises(errors.RateLimited, match="agent capped"):
                client.call("api.read", {"n": 2})
    assert len(upstream.requests) == 3


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({}, 1.0),  # no Retry-After: a default
        ({"Retry-After": "86400"}, 300.0),  # capped
        ({"Retry-After": "soon"}, 1.0),
    ],
)
def test_an_upstream_429_is_rate_limited_and_the_tool_rests_for_everyone(
    ws: Workspace, upstream: FakeUpstream, header: dict[str, str], expected: float
) -> None:
    tool(ws, upstream, retries={"max": 0})
    first, second = agent(ws, "first"), agent(ws, "second")
    upstream.respond = lambda request: Reply(429, {"error": "slow down"}, header)
    with ws.broker() as broker:
        with broker.client(first) as client, pytest.raises(errors.UpstreamRateLimited) as hit:
            client.call("api.read", {})
        assert hit.value.retry_after == pytest.approx(expected)
        with broker.client(second) as client, pytest.raises(errors.UpstreamRateLimited) as rest:
            client.call("api.read", {})
        assert 0 < (rest.value.retry_after or 0) <= expected
    assert len(upstream.requests) == 1  # the second agent did not hammer it


def test_retry_after_as_an_http_date(ws: Workspace, upstream: FakeUpstream) -> None:
    tool(ws, upstream, retries={"max": 0})
    a = agent(ws)
    # the date 30 s ahead of the answer, as an upstream sends it: made before the broker
    # started, it aged by however long the start and the first call took (seconds, busy)
    upstream.respond = lambda request: Reply(
        429, "", {"Retry-After": email.utils.formatdate(time.time() + 30, usegmt=True)}
    )
    with (
        ws.broker() as broker,
        broker.client(a) as client,
        pytest.raises(errors.UpstreamRateLimited) as hit,
    ):
        client.call("api.read", {})
    assert 27 <= (hit.value.retry_after or 0) <= 31


@pytest.mark.parametrize(
    ("rule", "reply"),
    [
        (
            {"status": 200, "json_path": "$.error", "equals": "ratelimited"},
            Reply(200, {"ok": False, "error": "ratelimited"}),
        ),
        (
            {"json_path": "$.errors[0].message", "contains": "rate limit"},
            Reply(200, {"errors": [{"message": "API rate limit exceeded"}]}),
        ),
        ({"body_regex": "(?i)too many requests"}, Reply(200, "<h1>Too Many Requests</h1>")),
        ({"status": 403, "json_path": "$.code", "equals": 88}, Reply(403, {"code": 88})),
    ],
)
def test_a_soft_429_is_never_a_result(
    ws: Workspace, upstream: FakeUpstream, rule: dict[str, Any], reply: Reply
) -> None:
    tool(ws, upstream, retries={"max": 0}, rate_limited_when=[rule])
    a = agent(ws)
    upstream.respond = lambda request: reply
    with ws.broker() as broker, broker.client(a) as client:
        with pytest.raises(errors.UpstreamRateLimited):
            client.call("api.read", {})
        upstream.respond = lambda request: Reply(200, {"ok": True, "error": None})
        time.sleep(1.1)  # the default rest after a soft 429 is 1 s; bounded
        assert client.call("api.read", {"n": 1}).result == {"ok": True, "error": None}


def test_remaining_zero_with_a_reset_gives_the_tool_a_rest(
    ws: Workspace, upstream: FakeUpstream
) -> None:
    tool(ws, upstream, retries={"max": 0})
    a = agent(ws)
    # the reset 20 s ahead of the answer, as an upstream sends it (made before the broker
    # started, it aged by however long the start and the first call took)
    upstream.respond = lambda request: Reply(
        200,
        {"items": []},
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(time.time()) + 20)},
    )
    with ws.broker() as broker, broker.client(a) as client:
        assert client.call("api.read", {}).state == "DONE"  # this answer is a real one
        with pytest.raises(errors.UpstreamRateLimited) as rest:
            client.call("api.read", {"n": 1})
    assert 15 < (rest.value.retry_after or 0) <= 21
    assert len(upstream.requests) == 1


def test_reads_are_retried_and_writes_are_not(ws: Workspace, upstream: FakeUpstream) -> None:
    tool(ws, upstream, retries={"max": 2, "base": "10ms", "cap": "50ms"})
    a = agent(ws)
    answers = iter([Reply(503), Reply(502), Reply(200, {"fine": True})])
    upstream.respond = lambda request: next(answers)
    with ws.broker() as broker, broker.client(a) as client:
        assert client.call("api.read", {}).result == {"fine": True}
        assert len(upstream.requests) == 3
        upstream.respond = lambda request: Reply(503)
        with pytest.raises(errors.UpstreamUnavailable):
            client.call("api.write", {"n": 1}, idempotency_key="w1")
    assert [r.method for r in upstream.requests].count("POST") == 1


def test_writes_are_retried_with_the_upstreams_idempotency_header(
    ws: Workspace, upstream: FakeUpstream
) -> None:
    tool(
        ws,
        upstream,
        idempotency_header="Idempotency-Key",
        retries={"max": 2, "base": "10ms", "cap": "50ms"},
    )
    a = agent(ws)
    answers = iter([Reply(503), Reply(201, {"created": True})])
    upstream.respond = lambda request: next(answers)
    with ws.broker() as broker, broker.client(a) as client:
        result = client.call("api.write", {"n": 1}, idempotency_key="order-42")
    assert result.result == {"created": True}
    assert [r.headers["idempotency-key"] for r in upstream.requests] == ["order-42", "order-42"]


def test_retries_stop_at_the_callers_deadline(ws: Workspace, upstream: FakeUpstream) -> None:
    tool(ws, upstream, retries={"max": 5})
    a = agent(ws)
    upstream.respond = lambda request: Reply(503, "", {"Retry-After": "10"})
    with ws.broker() as broker, broker.client(a) as client:
        # a broker's first request waits for its audit writer process to start (seconds on a
        # busy machine); that is not what the 2 s below are for
        client.list_tools()
        began = time.monotonic()
        with pytest.raises(errors.Unavailable):
            client.call("api.read", {}, timeout=2.0)
        assert time.monotonic() - began < 2.5
    assert len(upstream.requests) == 1  # a 10 s wait does not fit in 2 s: no second try


def test_the_circuit_opens_and_recovers(ws: Workspace, upstream: FakeUpstream) -> None:
    tool(ws, upstream, retries={"max": 0}, circuit_breaker={"failures": 3, "cool_down": "1s"})
    a = agent(ws)
    upstream.respond = lambda request: Reply(500)
    with ws.broker() as broker, broker.client(a) as client:
        for n in range(3):
            with pytest.raises(errors.UpstreamUnavailable, match="answered 500"):
                client.call("api.read", {"n": n})
        with pytest.raises(errors.UpstreamUnavailable, match="stops calling it") as open_:
            client.call("api.read", {"n": 9})
        assert 0 < (open_.value.retry_after or 0) <= 1.0
        assert len(upstream.requests) == 3  # failed fast, nothing sent
        time.sleep(1.1)  # the cool-down; bounded
        upstream.respond = lambda request: Reply(200, {"back": True})
        assert client.call("api.read", {"n": 10}).result == {"back": True}
        assert client.call("api.read", {"n": 11}).state == "DONE"


def test_budgets_per_day_task_and_tool_survive_a_restart(
    ws: Workspace, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    tool(ws, upstream)
    a = agent(ws, limits={"calls_per_day": 5, "calls_per_task": 2, **NO_LOOPS})
    with ws.broker() as broker:
        with broker.client(a) as client:
            client.call("api.read", {"n": 1}, task_id="t1")
            client.call("api.read", {"n": 2}, task_id="t1")
            with pytest.raises(errors.BudgetExceeded, match="task t1: 2 of 2 calls") as task:
                client.call("api.read", {"n": 3}, task_id="t1")
            assert task.value.retry_after is None
            client.call("api.read", {"n": 4}, task_id="t2")
        broker.restart()
        with broker.client(a) as client:
            client.call("api.read", {"n": 5}, task_id="t3")
            client.call("api.read", {"n": 6}, task_id="t3")
            with pytest.raises(errors.BudgetExceeded, match="budget for today: 5 of 5") as day:
                client.call("api.read", {"n": 7}, task_id="t4")
    assert 0 < (day.value.retry_after or 0) <= 86400
    assert len(upstream.requests) == 5
    assert "80% used" in caplog.text
    assert "100% used" in caplog.text


def test_cost_units_and_a_tool_budget(ws: Workspace, upstream: FakeUpstream) -> None:
    expensive = {**READ, "cost": 4}
    ws.tool(
        "api",
        base_url=upstream.url,
        allow_private_network=True,
        actions={"read": expensive, "write": WRITE},
    )
    a = agent(
        ws,
        limits={"cost_per_day": 10, **NO_LOOPS},
        grants=[{"tool": "api.read", "budget": {"calls_per_day": 5}}],
    )
    with ws.broker() as broker, broker.client(a) as client:
        client.call("api.read", {"n": 1})
        client.call("api.read", {"n": 2})
        with pytest.raises(errors.BudgetExceeded, match="8 of 10 cost units"):
            client.call("api.read", {"n": 3})
    assert len(upstream.requests) == 2


def test_a_looping_agent_is_stopped_then_frozen(
    ws: Workspace, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    tool(ws, upstream)
    a = agent(ws, limits={"loop": {"repeats": 3, "within": "60s", "freeze_after": 2}})
    with ws.broker() as broker, broker.client(a) as client:
        client.call("api.read", {"n": 1})
        client.call("api.read", {"n": 1})
        with pytest.raises(errors.LoopDetected, match="3 times with identical arguments") as loop:
            client.call("api.read", {"n": 1})
        assert 0 < (loop.value.retry_after or 0) <= 60
        client.call("api.read", {"n": 2})  # other arguments are another call
        broker.restart()  # the windows and the loop count survive
        with broker.client(a) as client:
            with pytest.raises(errors.LoopDetected):
                client.call("api.read", {"n": 1})  # the second loop today: frozen
            with pytest.raises(errors.AgentFrozen, match="broker:loop-detector"):
                client.call("api.read", {"n": 3})
    assert "was frozen automatically: 2 loops in a day" in caplog.text
    assert len(upstream.requests) == 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


NGINX_CONF = """
daemon off; master_process off; worker_processes 1;
pid {root}/nginx.pid; error_log {root}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {root}/body; proxy_temp_path {root}/proxy;
  fastcgi_temp_path {root}/fastcgi; uwsgi_temp_path {root}/uwsgi; scgi_temp_path {root}/scgi;
  limit_req_zone $binary_remote_addr zone=api:1m rate=5r/s;
  server {{
    listen 127.0.0.1:{port};
    location = /{token} {{ default_type text/plain; return 200 "{token}"; }}
    location / {{
      limit_req zone=api nodelay;
      limit_req_status 429;
      root {root}/www; default_type application/json;
      try_files /ok.json =404;
    }}
  }}
}}
"""


def _nginx_answers(port: int, token: str) -> bool:
    """True once this nginx answers on ``port`` (its own token, outside the limited location,
    so the probe takes no slot); not another process that took the port meanwhile."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/{token}", timeout=1) as answer:
            return bool(answer.read().decode() == token)
    except OSError:
        return False


@pytest.fixture
def nginx() -> Iterator[str]:
    """A real nginx on loopback answering {"ok": true}, limited to 5 requests a second with
    limit_req and limit_req_status 429. nginx cannot listen on port 0: a free port is picked
    and, should another process take it before nginx binds, picked again."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        unavailable("nginx is not installed (Debian: nginx-light)")
    root = Path(tempfile.mkdtemp(prefix="nginx-"))
    (root / "www").mkdir()
    (root / "www" / "ok.json").write_text('{"ok": true}')
    token = uuid.uuid4().hex
    process: subprocess.Popen[bytes] | None = None
    try:
        for _ in range(5):
            port = _free_port()
            (root / "nginx.conf").write_text(NGINX_CONF.format(root=root, port=port, token=token))
            process = subprocess.Popen(
                [binary, "-p", str(root), "-c", str(root / "nginx.conf")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            ready = False
            deadline = time.monotonic() + 10
            while not ready and process.poll() is None and time.monotonic() < deadline:
                ready = _nginx_answers(port, token)
                if not ready:
                    time.sleep(0.05)  # nginx is starting; bounded
            if ready:
                break
            process.kill()  # the port was taken (nginx exited), or it never answered
            process.wait(10)
        else:
            log = root / "error.log"
            said = log.read_text() if log.exists() else ""
            raise AssertionError(f"nginx did not start: {said}")
        yield f"http://127.0.0.1:{port}"
    finally:
        if process is not None and process.poll() is None:
            process.terminate()
            process.wait(10)
        shutil.rmtree(root, ignore_errors=True)


def test_against_a_real_rate_limiting_nginx(ws: Workspace, nginx: str) -> None:
    ws.tool(
        "edge",
        base_url=nginx,
        allow_private_network=True,
        retries={"max": 0},
        actions={"get": {**READ, "path": "/"}},
    )
    first = ws.agent("first", grants=["edge.get"], limits=NO_LOOPS)
    second = ws.agent("second", grants=["edge.get"], limits=NO_LOOPS)
    done = 0
    hit: errors.BrokerError | None = None
    with ws.broker() as broker, broker.client(first) as client:
        for n in range(12):
            try:
                assert client.call("edge.get", {"n": n}).result == {"ok": True}
                done += 1
            except errors.UpstreamRateLimited as exc:
                hit = exc
                break
        with (
            broker.client(second) as other,
            pytest.raises(errors.UpstreamRateLimited, match="asked the broker"),
        ):
            other.call("edge.get", {})  # refused by the broker: nginx is resting
    assert done >= 1
    assert hit is not None, "nginx never limited a burst of 12 calls"
    assert hit.retry_after == pytest.approx(1.0)  # nginx sends no Retry-After: the default


def test_tool_errors_are_not_mistaken_for_limits(ws: Workspace, upstream: FakeUpstream) -> None:
    tool(ws, upstream)
    a = agent(ws)
    upstream.respond = lambda request: Reply(404, {"error": "no such thing"})
    with ws.broker() as broker, broker.client(a) as client, pytest.raises(ToolError):
        client.call("api.read", {})
