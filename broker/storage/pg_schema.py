"""The PostgreSQL schema of the broker's state, as numbered migrations (``broker migrate``
applies them; a broker starting applies any that are missing, replicas taking turns).

The tables mean what their SQLite namesakes mean (``sqlite_schema``); the differences are
PostgreSQL's: BIGINT for times in milliseconds, BYTEA for ciphertext, and BYTEA for outside
values and text, which hold U+0000 (a TEXT column refuses it) and are compared exactly.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: the state of one broker, as SQLite's broker.db holds it at its version 13
    """
    CREATE TABLE calls (
        call_id TEXT PRIMARY KEY,
        agent TEXT NOT NULL,
        key_id TEXT NOT NULL,
        tool TEXT NOT NULL,
        task_id TEXT NOT NULL,
        intent TEXT NOT NULL,
        arguments TEXT NOT NULL,
        digest TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        state TEXT NOT NULL,
        why TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        updated_ms BIGINT NOT NULL,
        escalate_at_ms BIGINT NOT NULL DEFAULT 0,
        expires_at_ms BIGINT NOT NULL DEFAULT 0,
        reminded INTEGER NOT NULL DEFAULT 0,
        decided_by TEXT NOT NULL DEFAULT '',
        decided_ms BIGINT NOT NULL DEFAULT 0,
        note TEXT NOT NULL DEFAULT '',
        outcome TEXT NOT NULL DEFAULT '',
        slack TEXT NOT NULL DEFAULT ''
    );
    CREATE UNIQUE INDEX calls_idempotency ON calls (agent, idempotency_key)
        WHERE idempotency_key != '';
    CREATE INDEX calls_state ON calls (state, expires_at_ms);
    CREATE INDEX calls_updated ON calls (updated_ms);
    CREATE TABLE freezes (
        agent TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        frozen_by TEXT NOT NULL,
        ts_ms BIGINT NOT NULL
    );
    CREATE TABLE budgets (
        scope TEXT NOT NULL,
        period TEXT NOT NULL,
        calls BIGINT NOT NULL,
        cost BIGINT NOT NULL,
        alerted INTEGER NOT NULL DEFAULT 0,
        updated_ms BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (scope, period)
    );
    CREATE TABLE taint (
        agent TEXT NOT NULL,
        task_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        value BYTEA NOT NULL,
        origin TEXT NOT NULL,
        ts_ms BIGINT NOT NULL,
        PRIMARY KEY (agent, task_id, kind, value)
    );
    CREATE INDEX taint_time ON taint (agent, ts_ms);
    CREATE INDEX taint_at ON taint (ts_ms);
    CREATE TABLE outside_text (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        agent TEXT NOT NULL,
        task_id TEXT NOT NULL,
        source TEXT NOT NULL,
        origin TEXT NOT NULL,
        marks TEXT NOT NULL,
        text BYTEA NOT NULL,
        chars BIGINT NOT NULL,
        at_ms BIGINT NOT NULL
    );
    CREATE INDEX outside_text_task ON outside_text (agent, task_id);
    CREATE INDEX outside_text_time ON outside_text (agent, source, at_ms);
    CREATE INDEX outside_text_at ON outside_text (at_ms);
    CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        nonce BYTEA NOT NULL,
        ciphertext BYTEA NOT NULL,
        created_ms BIGINT NOT NULL,
        updated_ms BIGINT NOT NULL,
        last_used_ms BIGINT
    );
    CREATE TABLE secrets_version (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version BIGINT NOT NULL
    );
    INSERT INTO secrets_version (id, version) VALUES (1, 0);
    CREATE TABLE audit_heads (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        seq BIGINT NOT NULL,
        head_hash TEXT NOT NULL,
        ts_ms BIGINT NOT NULL,
        kind TEXT NOT NULL,
        key_id TEXT NOT NULL,
        signature TEXT NOT NULL,
        broker_id TEXT NOT NULL
    );
    """,
    # 2: the audit trail, one hash chain for every replica (as SQLite's audit.db holds one
    # broker's). audit_chain is its head: the writer that locks the row links the next batch.
    """
    CREATE TABLE audit (
        seq BIGINT PRIMARY KEY,
        ts_ms BIGINT NOT NULL,
        call_id TEXT NOT NULL,
        rpc TEXT NOT NULL,
        agent TEXT NOT NULL,
        key_id TEXT NOT NULL,
        nonce TEXT NOT NULL,
        tool TEXT NOT NULL,
        task_id TEXT NOT NULL,
        intent TEXT NOT NULL,
        args_digest TEXT NOT NULL,
        decision TEXT NOT NULL,
        reason TEXT NOT NULL,
        upstream_status INTEGER,
        latency_us BIGINT NOT NULL,
        policy_hash TEXT NOT NULL,
        detail TEXT NOT NULL,
        arguments TEXT NOT NULL,
        event TEXT NOT NULL,
        cost BIGINT NOT NULL,
        result_digest TEXT NOT NULL,
        result_size BIGINT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX audit_call ON audit (call_id);
    CREATE INDEX audit_time ON audit (ts_ms);
    CREATE TABLE audit_checkpoints (
        seq BIGINT PRIMARY KEY,
        head_hash TEXT NOT NULL,
        ts_ms BIGINT NOT NULL,
        kind TEXT NOT NULL,
        key_id TEXT NOT NULL,
        signature TEXT NOT NULL,
        broker_id TEXT NOT NULL
    );
    CREATE TABLE audit_chain (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq BIGINT NOT NULL,
        head TEXT NOT NULL,
        since_checkpoint BIGINT NOT NULL,
        last_checkpoint_ms BIGINT NOT NULL
    );
    INSERT INTO audit_chain (id, seq, head, since_checkpoint, last_checkpoint_ms)
        VALUES (1, 0, '', 0, (extract(epoch FROM now()) * 1000)::BIGINT);
    """,
    # 3: leases. Each broker process is a row of replicas with a heartbeat (the database's
    # clock, not the machines'); a write that starts executing is stamped with the process
    # running it (the session's toolbroker.replica), so recovery marks only the writes of
    # processes whose lease ran out, never those of a live replica. place: the host and data
    # directory lock a process held (a process starting there again knows its predecessor is
    # gone: it holds that lock now).
    """
    ALTER TABLE calls ADD COLUMN owner TEXT NOT NULL DEFAULT '';
    CREATE TABLE replicas (
        id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        place TEXT NOT NULL,
        started_ms BIGINT NOT NULL,
        heartbeat_ms BIGINT NOT NULL
    );
    CREATE FUNCTION toolbroker_call_owner() RETURNS trigger AS $$
    BEGIN
        NEW.owner := coalesce(current_setting('toolbroker.replica', true), '');
        RETURN NEW;
    END $$ LANGUAGE plpgsql;
    CREATE TRIGGER calls_owner BEFORE INSERT OR UPDATE OF state ON calls
        FOR EACH ROW WHEN (NEW.state = 'executing') EXECUTE FUNCTION toolbroker_call_owner();
    """,
    # 4: nonces every replica claims (identity.ReplayGuard): one process's accepted nonce is
    # a replay to every other
    """
    CREATE TABLE nonces (
        nonce TEXT PRIMARY KEY,
        expires_ms BIGINT NOT NULL
    );
    CREATE INDEX nonces_expiry ON nonces (expires_ms);
    """,
]
