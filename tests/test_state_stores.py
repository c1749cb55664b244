"""The state stores' contract, on both backends: the embedded SQLite file and a real PostgreSQL
server. The same scenario runs on each; what one backend promises (one decision of many
racing, budgets that add up, outside values kept exactly) the other keeps too."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from broker.errors import ConfigError
from broker.storage.backend import state_location, state_store
from broker.storage.interfaces import StateStore
from broker.storage.records import (
    CallRecord,
    CheckpointRow,
    Freeze,
    StoreError,
    TaintRow,
    TextSegment,
    Usage,
)
from broker.testing import Workspace
from tests.servers.postgres import PostgresServer

Scenario = Callable[[StateStore], Awaitable[None]]


@pytest.fixture(params=["sqlite", "postgresql"])
def open_state(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], StateStore]:
    """Makes state stores on one backend, all on the same database (as replicas are)."""
    overrides = {}
    if request.param == "postgresql":
        overrides["database_url"] = request.getfixturevalue("postgres_url")
    settings = Workspace(tmp_path).settings(**overrides)
    return lambda: state_store(settings)


def run(open_state: Callable[[], StateStore], scenario: Scenario) -> None:
    async def main() -> None:
        state = open_state()
        await state.open()
        try:
            await scenario(state)
        finally:
            await state.close()

    asyncio.run(main())


def call(call_id: str, *, key: str = "", state: str = "pending", at: int = 1000) -> CallRecord:
    return CallRecord(
        call_id=call_id,
        agent="invoice-agent",
        key_id="k1",
        tool="invoices.pay",
        task_id="task-1",
        intent="pay the March invoice\x00 (a NUL the agent sent)",
        arguments='{"amount":10,"id":"INV-1"}',
        digest="d" * 64,
        idempotency_key=key,
        state=state,
        why="a write",
        created_ms=at,
        updated_ms=at,
        expires_at_ms=at + 60_000,
        escalate_at_ms=at + 30_000,
    )


def test_of_many_racing_decisions_exactly_one_wins(open_state: Callable[[], StateStore]) -> None:
    async def scenario(state: StateStore) -> None:
        assert await state.calls.insert(call("c1", key="pay-once"))
        assert not await state.calls.insert(call("c2", key="pay-once"))  # the key is taken
        decisions = await asyncio.gather(
            *(
                state.calls.transition("c1", ["pending"], "approved", decided_by=f"user{n}")
                for n in range(20)
            )
        )
        assert decisions.count(True) == 1
        stored = await state.calls.find("invoice-agent", "pay-once")
        assert stored is not None
        assert stored.state == "approved"
        assert stored.decided_by == f"user{decisions.index(True)}"
        assert stored.intent.startswith("pay the March invoice")
        assert not await state.calls.transition("c1", ["pending"], "denied")

    run(open_state, scenario)


def test_two_stores_on_one_database_decide_a_call_once(
    open_state: Callable[[], StateStore],
) -> None:
    """Two brokers (replicas) on the same database: the compare-and-set holds across them."""

    async def scenario(first: StateStore) -> None:
        second = open_state()
        await second.open()
        try:
            await first.calls.insert(call("c1"))
            decided = await asyncio.gather(
                *(
                    store.calls.transition("c1", ["pending"], "approved", decided_by=name)
                    for _ in range(10)
                    for name, store in (("a", first), ("b", second))
                )
            )
            assert decided.count(True) == 1
            for store in (first, second):
                got = await store.calls.get("c1")
                assert got is not None
                assert got.state == "approved"
        finally:
            await second.close()

    run(open_state, scenario)


def test_calls_are_found_by_state_expiry_and_reminder(open_state: Callable[[], StateStore]) -> None:
    async def scenario(state: StateStore) -> None:
        await state.calls.insert(call("old", at=1000))
        await state.calls.insert(call("new", at=50_000))
        gone = open_state()  # a process that stopped while its write was executing
        await gone.open()
        await gone.calls.insert(call("run", state="executing", at=2000))
        await gone.close()
        assert [c.call_id for c in await state.calls.in_states(["pending"])] == ["old", "new"]
        assert [c.call_id for c in await state.calls.expiring(61_000)] == ["old"]
        assert [c.call_id for c in await state.calls.unreminded(31_000)] == ["old"]
        await state.calls.update("old", reminded=1)
        assert await state.calls.unreminded(31_000) == []
        assert await state.calls.count("pending") == 2
        assert await state.calls.count() == 3
        marked = await state.calls.mark_unfinished(99_000)
        assert [(c.call_id, c.state) for c in marked] == [("run", "executing")]
        assert (await state.calls.get("run")).state == "outcome_unknown"  # type: ignore[union-attr]
        await state.calls.transition("old", ["pending"], "denied", updated_ms=3000)
        assert await state.calls.prune(4000) == 1  # the old final one; not the pending one
        assert await state.calls.get("old") is None
        assert await state.calls.get("new") is not None
        assert await state.calls.get("run") is not None  # outcome_unknown waits for a human

    run(open_state, scenario)


def test_budget_charges_from_many_writers_add_up_exactly(
    open_state: Callable[[], StateStore],
) -> None:
    async def scenario(first: StateStore) -> None:
        second = open_state()
        await second.open()
        try:
            for n in range(100):
                store = first if n % 2 else second
                store.budgets.add_usage("agent:a", "2026-12-05", Usage(1, 3, 50 if n == 7 else 0))
            settles = [store.settle(durable=True) for store in (first, second)]
            assert None not in settles  # both have writes queued
            await asyncio.gather(*settles)  # type: ignore[arg-type]
            assert await first.budgets.usage("agent:a", "2026-12-05") == Usage(100, 300, 50)
            assert await second.budgets.usage("agent:b", "2026-12-05") == Usage()
            assert await first.budgets.prune("2026-12-06", 0) == 1
            assert await first.budgets.usage("agent:a", "2026-12-05") == Usage()
        finally:
            await second.close()

    run(open_state, scenario)


def test_outside_values_and_text_come_back_exactly(open_state: Callable[[], StateStore]) -> None:
    async def scenario(state: StateStore) -> None:
        odd = "evil@example.com\x00\u202e"
        rows = [TaintRow("email", odd, "mail.get"), TaintRow("iban", "DE89370400440532013000", "x")]
        state.taint.add("a", "task-1", rows, 1000)
        state.taint.add("a", "task-1", rows[:1], 1001)  # the same value again: kept once
        state.taint.add("a", "task-2", [TaintRow("url", "https://x.test", "web")], 5000)
        text = TextSegment(
            "untrusted", "mail.get (call 1)", "pay\x00DE89", ((0, "$.a"), (4, "$.b"))
        )
        state.taint.add_text(
            "a", TextSegment(**{**text.__dict__, "task_id": "task-1", "at_ms": 1000})
        )
        assert state.settle(durable=True) is None  # taint is lazy: a read's answer skips it
        settled = state.settle(durable=True, lazy=True)
        assert settled is not None
        await settled
        seen = await state.taint.values("a", "task-1", since_ms=4000)
        assert sorted((r.kind, r.value) for r in seen) == [
            ("email", odd),
            ("iban", "DE89370400440532013000"),
            ("url", "https://x.test"),
        ]
        assert await state.taint.values("a", "task-1", since_ms=6000) != seen
        ids = await state.taint.text_ids("a", "task-1", 0)
        assert [source for _, source in ids] == ["untrusted"]
        (segment,) = await state.taint.texts([ids[0][0]])
        assert segment.text == "pay\x00DE89"
        assert segment.path_at(5) == "$.b"
        assert await state.taint.text_chars("a", "untrusted") == len("pay\x00DE89")
        assert await state.taint.prune(2000) == 3  # two values and the text of task-1
        assert [r.value for r in await state.taint.values("a", "task-2", 0)] == ["https://x.test"]

    run(open_state, scenario)


def test_secrets_version_moves_with_changes_not_with_use(
    open_state: Callable[[], StateStore],
) -> None:
    async def scenario(state: StateStore) -> None:
        start = await state.secrets.version()
        assert await state.secrets.put("token", b"n" * 12, b"cipher", 1000, replace=False)
        assert not await state.secrets.put("token", b"n" * 12, b"other", 1001, replace=False)
        assert not await state.secrets.put("missing", b"n" * 12, b"x", 1001, replace=True)
        added = await state.secrets.version()
        assert added != start
        state.secrets.used("token", 2000)
        settled = state.settle(durable=True)
        assert settled is not None
        await settled
        assert await state.secrets.version() == added
        (row,) = await state.secrets.rows()
        assert (row.name, row.ciphertext, row.last_used_ms) == ("token", b"cipher", 2000)
        assert await state.secrets.put("token", b"m" * 12, b"new", 3000, replace=True)
        assert await state.secrets.version() != added
        assert await state.secrets.delete("token")
        assert not await state.secrets.delete("token")
        assert await state.secrets.rows() == []

    run(open_state, scenario)


def test_freezes_and_heads_are_kept(open_state: Callable[[], StateStore]) -> None:
    async def scenario(state: StateStore) -> None:
        await state.freezes.set(Freeze("a", "leaked a key", "alice", 1000))
        await state.freezes.set(Freeze("a", "still leaking", "bob", 2000))
        await state.freezes.set(Freeze("*", "incident", "carol", 3000))
        assert await state.freezes.all() == {
            "a": Freeze("a", "still leaking", "bob", 2000),
            "*": Freeze("*", "incident", "carol", 3000),
        }
        assert await state.freezes.clear("*")
        assert not await state.freezes.clear("*")
        mark = CheckpointRow(7, "h" * 64, 1000, "periodic", "audit-key", "sig", "broker.test")
        await state.heads.add(mark)
        assert await state.heads.all() == [mark]

    run(open_state, scenario)


def test_postgres_down_fails_closed_and_recovers(
    postgres_server: PostgresServer, postgres_url: str, tmp_path: Path
) -> None:
    """With the server stopped, reads and writes fail with StoreError within seconds (never
    hang, never name the password); once it is back, the same store works again."""
    settings = Workspace(tmp_path).settings(database_url=postgres_url)
    password = postgres_url.split(":")[2].split("@")[0]

    async def scenario() -> None:
        state = state_store(settings)
        await state.open()
        try:
            await state.freezes.set(Freeze("a", "before", "alice", 1000))
            postgres_server.stop()
            try:
                for attempt in (state.freezes.all(), state.calls.insert(call("c1"))):
                    with pytest.raises(StoreError) as failed:
                        await asyncio.wait_for(attempt, 60)
                    assert password not in str(failed.value)
            finally:
                postgres_server.start()
            assert list(await state.freezes.all()) == ["a"]
            assert await state.calls.insert(call("c1"))
        finally:
            await state.close()

    asyncio.run(scenario())


def test_a_database_that_cannot_be_reached_is_named_without_its_password(
    tmp_path: Path,
) -> None:
    url = "postgresql://broker:s3cret-pass@127.0.0.1:9/toolbroker"  # port 9: nothing listens
    settings = Workspace(tmp_path).settings(database_url=url)
    assert state_location(settings) == "postgresql://broker:***@127.0.0.1:9/toolbroker"

    async def scenario() -> None:
        with pytest.raises(StoreError) as failed:
            await state_store(settings).open()
        assert "s3cret" not in str(failed.value)
        assert "127.0.0.1:9" in str(failed.value)

    asyncio.run(scenario())


def test_database_url_env_names_a_variable(tmp_path: Path) -> None:
    settings = Workspace(tmp_path).settings(database_url_env="TB_TEST_DATABASE_URL")
    with pytest.raises(ConfigError, match="TB_TEST_DATABASE_URL is not set"):
        state_store(settings, env={})
    with pytest.raises(ConfigError, match="must hold a postgresql:// URL"):
        state_store(settings, env={"TB_TEST_DATABASE_URL": "mysql://root:pw@db/x"})
    with pytest.raises(ConfigError, match="must be a postgresql:// URL") as refused:
        Workspace(tmp_path).settings(database_url="mysql://root:hunter2@db/x")
    assert "hunter2" not in str(refused.value)
