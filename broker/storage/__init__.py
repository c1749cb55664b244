"""Where the broker keeps what a restart must not lose, behind typed async interfaces.

- ``records``: the plain records every backend stores (calls, audit records, checkpoints,
  freezes, budget use, taint, secrets) and the audit chain's hash format
- ``interfaces``: what the broker asks of a backend (``StateStore`` with its small stores,
  ``AuditReader``); no caller passes SQL
- ``backend``: the one place that chooses the backend for a config
- the SQLite backend (the embedded default): ``sqlite_connection`` (connections, reads off the
  event loop), ``sqlite_schema`` (both files' migrations), ``group_commit`` (many writes, one
  transaction and one fsync), one module per kind of state (``sqlite_calls``,
  ``sqlite_freezes``, ``sqlite_budgets``, ``sqlite_taint``, ``sqlite_secrets``), ``sqlite_state``
  (``broker.db`` as a whole), ``sqlite_audit`` (reading and pruning ``audit.db``) and
  ``audit_ledger`` (``audit.db`` as the audit writer process writes it)
"""
