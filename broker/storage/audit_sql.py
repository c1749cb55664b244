"""The SQL of an audit query, the same on SQLite and PostgreSQL but for the placeholder."""

from __future__ import annotations

from broker.storage.records import AUDIT_COLUMNS, AuditQuery

SELECT_RECORDS = f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit "  # noqa: S608


def audit_query_sql(query: AuditQuery, mark: str) -> tuple[str, list[object]]:
    """The statement and its parameters for ``query``; ``mark``: ``?`` or ``%s``. Column names
    come from AuditQuery, which accepts only known ones; every value is bound."""
    clauses, params = [f"seq > {mark}"], [query.after_seq]  # type: tuple[list[str], list[object]]
    for column, value in query.equals.items():
        clauses.append(f"{column} = {mark}")
        params.append(value)
    if query.before_seq is not None:
        clauses.append(f"seq < {mark}")
        params.append(query.before_seq)
    if query.since_ms is not None:
        clauses.append(f"ts_ms >= {mark}")
        params.append(query.since_ms)
    if query.until_ms is not None:
        clauses.append(f"ts_ms < {mark}")
        params.append(query.until_ms)
    sql = SELECT_RECORDS + "WHERE " + " AND ".join(clauses)
    sql += " ORDER BY seq DESC" if query.newest else " ORDER BY seq"
    if query.limit is not None:
        sql += f" LIMIT {int(query.limit)}"
    return sql, params
