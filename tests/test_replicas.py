"""Replicas: several broker processes on one PostgreSQL state, each with its own data
directory, sharing the audit key and the admin key. What an agent or an operator does through
one replica holds on every other: one audit chain, a write that runs once, a freeze, a
decision that wakes an Await, and a replica starting never takes a live one's running write
for lost."""

from __future__ import annotations

import base64
import contextlib
import io
import itertools
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from broker import errors
from broker.cli import main
from broker.client import ApprovalPending, BrokerClient
from broker.signing import AgentCredentials
from broker.testing import FakeUpstream, Reply, RunningBroker, Workspace
from broker.v1 import broker_pb2 as pb
from tests.broker_process import bound_port, start_broker, wait_serving
from tests.conftest import INVOICE_ACTIONS
from tests.servers.ports import ATTEMPTS, free_port
from tests.servers.postgres import PostgresServer
from tests.servers.redis import RedisServer
from tests.state_sql import state_sql

NO_LOOPS = {"loop": {"repeats": 10_000}}


@pytest.fixture
def shared(tmp_path: Path, upstream: FakeUpstream, postgres_url: str) -> Workspace:
    workspace = Workspace(tmp_path, database_url=postgres_url)
    workspace.tool(
        "invoices", base_url=upstream.url, allow_private_network=True, actions=INVOICE_ACTIONS
    )
    return workspace


def replica(
    ws: Workspace, name: str, env: dict[str, str] | None = None, **overrides: Any
) -> RunningBroker:
    """A broker of the deployment: its own data directory, the shared keys and database."""
    keys = ws.root / "keys"  # outside every data directory, as the docs say
    settings = ws.settings(
        data_dir=f"data-{name}",
        audit_key_file=str(keys / "audit.key"),
        admin_key_file=str(keys / "admin.key"),
        **overrides,
    )
    return RunningBroker(settings, env)


@pytest.fixture
def payer(shared: Workspace) -> AgentCredentials:
    return shared.agent(
        "payer",
        grants=[
            "invoices.list",
            {"tool": "invoices.pay", "approval": "never", "no_approval_because": "tests"},
        ],
        limits=NO_LOOPS,
    )


@pytest.fixture
def pair(shared: Workspace, payer: AgentCredentials) -> Iterator[tuple[RunningBroker, ...]]:
    with replica(shared, "a") as a, replica(shared, "b") as b:
        yield a, b


def test_replicas_extend_one_audit_chain_that_verifies(
    shared: Workspace,
    payer: AgentCredentials,
    pair: tuple[RunningBroker, ...],
    capsys: pytest.CaptureFixture[str],
) -> None:
    clients = [broker.client(payer) for broker in pair]
    try:

        def call(n: int) -> str:
            return clients[n % 2].call("invoices.list", {"limit": n}).call_id

        with ThreadPoolExecutor(8) as pool:  # both replicas write records at the same time
            call_ids = list(pool.map(call, range(40)))
    finally:
        for client in clients:
            client.close()
    for broker in pair:
        broker.stop()  # each signs the shared head as it stops

    rows = shared.audit()
    assert [row.seq for row in rows] == list(range(1, len(rows) + 1))
    assert {row.call_id for row in rows} >= set(call_ids)
    assert all(row.prev_hash == before.hash for before, row in itertools.pairwise(rows))
    code = main(["audit", "verify", "--config", str(shared.root / "broker.yaml")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"ok: {len(rows)} record(s) chained" in out
    # an edit anywhere in the shared chain is named, as on SQLite
    state_sql(shared, "UPDATE audit SET intent = 'edited' WHERE seq = 7")
    assert main(["audit", "verify", "--config", str(shared.root / "broker.yaml")]) == 1
    assert "record 7 was changed" in capsys.readouterr().out


def test_a_write_retried_on_another_replica_runs_once(
    payer: AgentCredentials, upstream: FakeUpstream, pair: tuple[RunningBroker, ...]
) -> None:
    a, b = pair
    upstream.respond = lambda request: Reply(body={"paid": True})
    arguments = {"id": "INV-7", "amount": 20}
    with a.client(payer) as first, b.client(payer) as second:
        done = first.call("invoices.pay", arguments, idempotency_key="pay-7")
        again = second.call("invoices.pay", arguments, idempotency_key="pay-7")
    assert [r.method for r in upstream.requests] == ["POST"]
    assert again.call_id == done.call_id
    assert again.result == done.result


def test_a_freeze_through_one_replica_stops_the_agent_on_the_other(
    payer: AgentCredentials, pair: tuple[RunningBroker, ...]
) -> None:
    a, b = pair
    with b.client(payer) as client, a.admin() as admin:
        client.call("invoices.list", {})
        admin.freeze("payer", reason="invoice fraud suspected")
        frozen_at = time.monotonic()
        deadline = frozen_at + 10  # generous: NOTIFY arrives in milliseconds (docs: <1 s)
        refusal = ""
        while not refusal:
            try:
                client.call("invoices.list", {})
            except errors.AgentFrozen as exc:
                refusal = str(exc)
            assert time.monotonic() < deadline, "the other replica never saw the freeze"
            time.sleep(0.02)  # polling the other replica for the freeze; bounded above
        assert "invoice fraud suspected" in refusal
        admin.unfreeze("payer", reason="cleared")
        deadline = time.monotonic() + 10
        while True:
            try:
                client.call("invoices.list", {})
                break
            except errors.AgentFrozen:
                assert time.monotonic() < deadline, "the other replica never saw the unfreeze"
                time.sleep(0.02)  # as above


def test_a_decision_on_one_replica_wakes_an_await_on_the_other(
    shared: Workspace, upstream: FakeUpstream, pair: tuple[RunningBroker, ...]
) -> None:
    a, b = pair
    asker = shared.agent("asker", grants=["invoices.pay"], limits=NO_LOOPS)
    a.reload()
    b.reload()
    with a.client(asker) as on_a, b.client(asker) as on_b, a.admin() as admin:
        with pytest.raises(ApprovalPending) as pending:
            on_a.call(
                "invoices.pay",
                {"id": "INV-9", "amount": 5},
                idempotency_key="pay-9",
                wait_for_approval=False,
            )
        call_id = pending.value.call_id
        answered: dict[str, Any] = {}

        def await_on_b() -> None:
            started = time.monotonic()
            answered["result"] = on_b.await_call(call_id, wait_ms=60_000)
            answered["waited"] = time.monotonic() - started

        waiter = threading.Thread(target=await_on_b)
        waiter.start()
        time.sleep(0.5)  # let the Await reach replica b and start waiting there
        admin.decide(call_id, approve=True, reason="looks right")
        waiter.join(70)
    assert "result" in answered, "the Await on the other replica never answered"
    assert answered["result"].call_id == call_id
    assert answered["waited"] < 30, "woken by the decision, not by its own timeout"
    assert [r.method for r in upstream.requests] == ["POST"]


def test_a_starting_replica_leaves_a_live_replicas_running_write_alone(
    shared: Workspace, payer: AgentCredentials, upstream: FakeUpstream
) -> None:
    upstream.respond = lambda request: Reply(body={"paid": True}, delay=3.0)
    with replica(shared, "a") as a, a.client(payer) as client:
        outcome: dict[str, Any] = {}

        def pay() -> None:
            outcome["result"] = client.call(
                "invoices.pay", {"id": "INV-3", "amount": 1}, idempotency_key="pay-3"
            )

        writer = threading.Thread(target=pay)
        writer.start()
        deadline = time.monotonic() + 10
        while not upstream.requests:  # the write is now executing on replica a
            assert time.monotonic() < deadline
            time.sleep(0.02)  # bounded wait for the upstream to see the POST
        with replica(shared, "b"):  # starts, recovers, serves: while a's write still runs
            pass
        writer.join(30)
    assert outcome["result"].result == {"paid": True}
    states = state_sql(shared, "SELECT state FROM calls")
    assert states == [("done",)]


def test_a_request_replayed_to_another_replica_is_refused(
    payer: AgentCredentials, upstream: FakeUpstream, pair: tuple[RunningBroker, ...]
) -> None:
    a, b = pair
    envelope = payer.envelope("broker.test")
    envelope.call.CopyFrom(pb.CallRequest(tool="invoices.list", arguments_json="{}"))
    signed = payer.sign(envelope)
    with a.client(payer) as first, b.client(payer) as second:
        assert first.send("Call", signed).state == pb.CallResult.DONE
        with pytest.raises(errors.Unauthenticated) as refused:
            second.send("Call", signed)
    assert refused.value.reason == "REPLAYED_NONCE"
    assert len(upstream.requests) == 1


def test_replicas_together_never_let_an_agent_spend_past_its_budget(
    shared: Workspace, upstream: FakeUpstream
) -> None:
    spender = shared.agent(
        "spender", grants=["invoices.list"], limits={**NO_LOOPS, "calls_per_day": 5}
    )
    with replica(shared, "a") as a, replica(shared, "b") as b:
        clients = [a.client(spender), b.client(spender)]

        def call(n: int) -> str:
            try:
                clients[n % 2].call("invoices.list", {"limit": n})
            except errors.BudgetExceeded as exc:
                return exc.reason
            return "done"

        try:
            with ThreadPoolExecutor(8) as pool:  # both replicas charge at the same time
                outcomes = list(pool.map(call, range(20)))
        finally:
            for client in clients:
                client.close()
    assert outcomes.count("done") == 5
    assert outcomes.count("BUDGET_EXCEEDED") == 15
    assert len(upstream.requests) == 5


def limited(ws: Workspace, name: str, requests: int, **grant: Any) -> AgentCredentials:
    """An agent whose grants of invoices allow ``requests`` calls a minute each."""
    rate = {"requests": requests, "per": "60s"}
    return ws.agent(
        name,
        grants=[
            {"tool": "invoices.list", "rate_limit": rate},
            {"tool": "invoices.pay", "rate_limit": rate, "approval": "never", **grant},
        ],
        limits=NO_LOOPS,
    )


def test_replicas_share_one_rate_limit_in_redis(
    shared: Workspace, upstream: FakeUpstream, redis_url: str
) -> None:
    agent = limited(shared, "lister", 3, no_approval_because="tests")
    with (
        replica(shared, "a", redis_url=redis_url) as a,
        replica(shared, "b", redis_url=redis_url) as b,
        a.client(agent) as on_a,
        b.client(agent) as on_b,
    ):
        outcomes, waits = [], []
        for n in range(6):
            try:
                (on_a if n % 2 else on_b).call("invoices.list", {"limit": n})
                outcomes.append("done")
            except errors.RateLimited as exc:
                outcomes.append(exc.reason)
                waits.append(exc.retry_after or 0.0)
    assert outcomes == ["done"] * 3 + ["RATE_LIMITED"] * 3
    assert all(wait > 0 for wait in waits)
    assert len(upstream.requests) == 3


def test_an_upstreams_429_rests_the_tool_on_every_replica(
    shared: Workspace, payer: AgentCredentials, upstream: FakeUpstream, redis_url: str
) -> None:
    upstream.respond = lambda request: Reply(429, {"error": "slow down"}, {"Retry-After": "30"})
    with (
        replica(shared, "a", redis_url=redis_url) as a,
        replica(shared, "b", redis_url=redis_url) as b,
        a.client(payer) as on_a,
        b.client(payer) as on_b,
    ):
        with pytest.raises(errors.UpstreamRateLimited):
            on_a.call("invoices.list", {})
        seen = len(upstream.requests)
        with pytest.raises(errors.UpstreamRateLimited) as resting:
            on_b.call("invoices.list", {})
    assert len(upstream.requests) == seen, "the other replica called the resting upstream"
    assert resting.value.retry_after is not None and 20 < resting.value.retry_after <= 30


def test_a_loop_across_replicas_is_caught_at_the_same_threshold(
    shared: Workspace, upstream: FakeUpstream, redis_url: str
) -> None:
    looper = shared.agent(
        "looper", grants=["invoices.list"], limits={"loop": {"repeats": 3, "within": "60s"}}
    )
    with (
        replica(shared, "a", redis_url=redis_url) as a,
        replica(shared, "b", redis_url=redis_url) as b,
        a.client(looper) as on_a,
        b.client(looper) as on_b,
    ):
        on_a.call("invoices.list", {"limit": 1})
        on_b.call("invoices.list", {"limit": 1})
        with pytest.raises(errors.LoopDetected):
            on_a.call("invoices.list", {"limit": 1})
    assert len(upstream.requests) == 2


def test_with_redis_down_writes_fail_closed_and_reads_get_their_share(
    shared: Workspace, upstream: FakeUpstream, redis_server: RedisServer
) -> None:
    agent = limited(shared, "spender", 4, no_approval_because="tests")
    down = redis_server.url.replace(f":{redis_server.port}", f":{free_port()}")  # nobody there
    with replica(shared, "a", redis_url=down, replica_count=2) as a, a.client(agent) as client:
        with pytest.raises(errors.StoreUnavailable) as refused:
            client.call("invoices.pay", {"id": "INV-1", "amount": 1}, idempotency_key="p-1")
        outcomes = []
        for n in range(3):
            try:
                client.call("invoices.list", {"limit": n})
                outcomes.append("done")
            except errors.RateLimited:
                outcomes.append("RATE_LIMITED")
    assert refused.value.reason == "STORE_UNAVAILABLE"
    assert "rate limits" in str(refused.value)
    assert outcomes == ["done", "done", "RATE_LIMITED"]  # 4 a minute, shared by 2 replicas
    assert [r.method for r in upstream.requests] == ["GET", "GET"]


def test_workers_share_one_port_and_one_chain(
    shared: Workspace, payer: AgentCredentials, capsys: pytest.CaptureFixture[str]
) -> None:
    log = shared.root / "workers.log"
    for _ in range(ATTEMPTS):  # a free port may be taken by another suite before we bind it
        port = free_port()
        shared.settings(listen=f"127.0.0.1:{port}")
        process = start_broker(str(shared.root / "broker.yaml"), log, "--workers", "2")
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            if log.read_text(errors="replace").count(f"serving on port {port}") == 2:
                break
            time.sleep(0.1)  # two workers starting; bounded by the deadline
        if process.poll() is None:
            break
    assert process.poll() is None, log.read_text(errors="replace")
    try:
        live = state_sql(shared, "SELECT count(*) FROM replicas")
        assert live == [(2,)], "two workers, each with its lease"
        for n in range(20):  # a connection each: the kernel spreads them over the workers
            with BrokerClient(f"127.0.0.1:{port}", payer, broker_id=shared.broker_id) as client:
                assert client.call("invoices.list", {"limit": n}).result is not None
    finally:
        process.send_signal(signal.SIGTERM)  # to the supervisor, which stops its workers
        assert process.wait(60) == 0, log.read_text(errors="replace")
    assert state_sql(shared, "SELECT count(*) FROM replicas") == [(0,)]
    assert main(["audit", "verify", "--config", str(shared.root / "broker.yaml")]) == 0
    assert f"ok: {len(shared.audit())} record(s)" in capsys.readouterr().out


def test_a_dead_replicas_running_write_becomes_outcome_unknown_and_never_runs_again(
    shared: Workspace, payer: AgentCredentials, upstream: FakeUpstream
) -> None:
    upstream.respond = lambda request: Reply(body={"paid": True}, delay=60.0)
    log = shared.root / "a.log"
    config = shared.settings(data_dir="data-a", listen="127.0.0.1:0")
    a = start_broker(str(shared.root / "broker.yaml"), log, own_group=True)
    try:
        target = f"127.0.0.1:{bound_port(a, log)}"
        with (
            replica(shared, "b") as b,
            BrokerClient(target, payer, broker_id=config.broker_id) as on_a,
        ):
            wait_serving(on_a)

            def pay() -> None:
                with contextlib.suppress(errors.BrokerError):  # a dies under this call
                    on_a.call("invoices.pay", {"id": "INV-5", "amount": 3}, idempotency_key="p5")

            writer = threading.Thread(target=pay)
            writer.start()
            deadline = time.monotonic() + 20
            while not upstream.requests:  # the write is executing on replica a
                assert time.monotonic() < deadline
                time.sleep(0.05)  # bounded wait for the upstream to see the POST
            os.killpg(a.pid, signal.SIGKILL)  # the machine of replica a is gone
            a.wait(10)
            writer.join(30)
            # b, running all along, finds the write once a's lease has run out
            deadline = time.monotonic() + 90
            while state_sql(shared, "SELECT state FROM calls") != [("outcome_unknown",)]:
                assert time.monotonic() < deadline, "the dead replica's write was never found"
                time.sleep(0.5)  # leases run out in 15 s, looked at every 5 s; bounded
            with b.client(payer) as on_b, pytest.raises(errors.OutcomeUnknown):
                on_b.call("invoices.pay", {"id": "INV-5", "amount": 3}, idempotency_key="p5")
    finally:
        if a.poll() is None:
            os.killpg(a.pid, signal.SIGKILL)
            a.wait(10)
    assert [r.method for r in upstream.requests] == ["POST"]
    events = [row.event for row in shared.audit() if row.tool == "invoices.pay"]
    assert "outcome_unknown" in events
    # the chain both replicas wrote, a's cut off by the kill, verifies whole
    assert main(["audit", "verify", "--config", str(shared.root / "broker.yaml")]) == 0


def test_a_replica_that_lost_its_change_feed_reads_everything_again(
    shared: Workspace, payer: AgentCredentials, pair: tuple[RunningBroker, ...]
) -> None:
    _, b = pair
    with b.client(payer) as client:
        client.call("invoices.list", {})
        # every listener's connection cut, and a freeze made meanwhile that nobody announced:
        # only the full re-read after the reconnect can find it
        state_sql(
            shared,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE left(query, 6) = 'LISTEN' AND pid != pg_backend_pid()",
        )
        state_sql(
            shared,
            "INSERT INTO freezes (agent, reason, frozen_by, ts_ms) VALUES (?, ?, ?, ?)",
            ("payer", "set while the feed was down", "operator", 1),
        )
        deadline = time.monotonic() + 20
        refusal = ""
        while not refusal:
            try:
                client.call("invoices.list", {})
            except errors.AgentFrozen as exc:
                refusal = str(exc)
            assert time.monotonic() < deadline, "the replica never read the freezes again"
            time.sleep(0.05)  # the listener reconnects within a second; bounded above
    assert "set while the feed was down" in refusal


def test_a_state_database_that_goes_away_refuses_calls_and_they_resume_when_it_is_back(
    tmp_path: Path, upstream: FakeUpstream, postgres_server: PostgresServer
) -> None:
    own = PostgresServer(postgres_server.bin_dir)  # a server of its own, to stop and start
    with own:
        url = own.fresh_database()
        ws = Workspace(tmp_path, database_url=url)
        ws.tool(
            "invoices", base_url=upstream.url, allow_private_network=True, actions=INVOICE_ACTIONS
        )
        reader = ws.agent("reader", grants=["invoices.list"], limits=NO_LOOPS)
        with ws.broker() as broker, broker.client(reader) as client:
            client.call("invoices.list", {})
            own.stop()
            with pytest.raises(errors.Unavailable) as refused:
                client.call("invoices.list", {})
            own.start()
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.call("invoices.list", {})
                    break
                except errors.Unavailable:
                    assert time.monotonic() < deadline, "calls never resumed"
                    time.sleep(0.2)  # the pool reconnects on its own; bounded
        executed = [row for row in ws.audit() if row.event == "executed"]
    assert refused.value.reason in {"STORE_UNAVAILABLE", "AUDIT_UNAVAILABLE"}
    assert own.password not in str(refused.value)
    assert len(upstream.requests) == len(executed) >= 2  # nothing ran unrecorded


def test_a_secret_changed_while_replicas_run_is_used_by_them_within_a_second(
    shared: Workspace, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    master = base64.b64encode(b"m" * 32).decode()
    monkeypatch.setenv("BROKER_MASTER_KEY", master)
    shared.tool(
        "vault",
        base_url=upstream.url,
        allow_private_network=True,
        credentials={"api_key": {"header": "Authorization", "value": "Bearer {secret}"}},
        actions={"read": {"effect": "read", "method": "GET", "path": "/read"}},
    )
    reader = shared.agent(
        "reader", grants=["vault.read"], credentials={"vault.api_key": "vault-key"}, limits=NO_LOOPS
    )
    config = str(shared.root / "broker.yaml")

    def set_secret(value: str, verb: str) -> None:
        monkeypatch.setattr("sys.stdin", io.StringIO(value + "\n"))
        assert main(["secrets", verb, "vault-key", "--config", config]) == 0

    env = {"BROKER_MASTER_KEY": master}
    with replica(shared, "a", env), replica(shared, "b", env) as b, b.client(reader) as on_b:
        set_secret("first-value-0123456789", "set")
        on_b.call("vault.read", {})
        assert upstream.requests[-1].headers["authorization"] == "Bearer first-value-0123456789"
        set_secret("second-value-0123456789", "rotate")
        changed = time.monotonic()
        while upstream.requests[-1].headers["authorization"] != "Bearer second-value-0123456789":
            assert time.monotonic() - changed < 10, "the other replica kept the old value"
            time.sleep(0.1)  # replicas look at the version every 0.5 s; bounded above
            on_b.call("vault.read", {})


def test_a_double_decision_across_replicas_runs_the_call_once(
    shared: Workspace, upstream: FakeUpstream, pair: tuple[RunningBroker, ...]
) -> None:
    a, b = pair
    asker = shared.agent("asker", grants=["invoices.pay"], limits=NO_LOOPS)
    a.reload()
    b.reload()
    with a.client(asker) as client, pytest.raises(ApprovalPending) as pending:
        client.call(
            "invoices.pay",
            {"id": "INV-4", "amount": 9},
            idempotency_key="p4",
            wait_for_approval=False,
        )
    call_id = pending.value.call_id
    with a.admin() as on_a, b.admin() as on_b:

        def decide(admin: Any) -> str:
            try:
                admin.decide(call_id, approve=True, reason="both looked")
            except errors.AlreadyDecided as exc:
                return exc.reason
            return "decided"

        with ThreadPoolExecutor(2) as pool:
            outcomes = sorted(pool.map(decide, [on_a, on_b]))
    assert outcomes == ["ALREADY_DECIDED", "decided"]
    with b.client(asker) as client:
        client.await_call(call_id, wait_ms=20_000)
    assert [r.method for r in upstream.requests] == ["POST"]


def test_an_upstream_never_sees_more_than_its_rate_limit_from_all_replicas(
    shared: Workspace, redis_url: str
) -> None:
    seen: list[float] = []
    with FakeUpstream(lambda request: seen.append(time.monotonic()) or Reply()) as counted:
        shared.tool(
            "metered",
            base_url=counted.url,
            allow_private_network=True,
            rate_limit={"requests": 5, "per": "1s", "queue": "2s"},
            actions={"read": {"effect": "read", "method": "GET", "path": "/read"}},
        )
        agent = shared.agent("reader", grants=["metered.read"], limits=NO_LOOPS)
        with (
            replica(shared, "a", redis_url=redis_url) as a,
            replica(shared, "b", redis_url=redis_url) as b,
        ):
            clients = [a.client(agent), b.client(agent)]

            def call(n: int) -> str:
                try:
                    clients[n % 2].call("metered.read", {})
                except errors.RateLimited as exc:
                    return exc.reason
                return "done"

            try:
                with ThreadPoolExecutor(8) as pool:  # both replicas send at the same time
                    outcomes = list(pool.map(call, range(30)))
            finally:
                for client in clients:
                    client.close()
    assert outcomes.count("done") == len(seen) > 5
    busiest = max(sum(1 for t in seen if start <= t < start + 1.0) for start in seen)
    assert busiest <= 5, f"the upstream saw {busiest} calls within one second"
