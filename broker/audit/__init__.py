"""The audit trail: every step of every request, hash-chained, with signed checkpoints.

- ``trail``: what the broker's stages and services append through (``AuditTrail``)
- ``events``: records of steps outside a request (approved, denied, frozen, ...)
- ``pipe``: the broker's end of the audit writer process; ``wire``: what crosses the pipe
- ``writer``: the audit writer process (``python -m broker.audit.writer``): chains, signs,
  commits and fsyncs
- ``checkpoints``: the audit key and signed checkpoints; ``verification``: verify and prune
"""
