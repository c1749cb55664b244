"""Asking humans without Slack: the operator's command line (``broker approvals list``,
``broker approve``, ``broker deny``). This notifier only logs; the CLI reads the calls table."""

from __future__ import annotations

import logging

from broker.policy import Policy
from broker.storage.records import CallRecord

log = logging.getLogger(__name__)


class CliNotifier:
    """Logs each question and how it ended; the approval note names the command to run."""

    def where(self, record: CallRecord, policy: Policy | None) -> str:
        """Where the question was asked."""
        return f"waiting for an operator: broker approve {record.call_id} (or broker deny)"

    async def asked(self, record: CallRecord, policy: Policy | None) -> None:
        """Log the question."""
        log.warning(
            "call %s (%s %s) waits for approval: broker approve %s",
            record.call_id,
            record.agent,
            record.tool,
            record.call_id,
        )

    async def reminded(self, record: CallRecord, policy: Policy | None) -> None:
        """Log the escalation."""
        log.warning(
            "call %s (%s %s) is still undecided; the agent was told to stop and wait",
            record.call_id,
            record.agent,
            record.tool,
        )

    async def decided(self, record: CallRecord) -> None:
        """Log how it ended."""
        log.info(
            "call %s (%s %s) is %s%s",
            record.call_id,
            record.agent,
            record.tool,
            record.state,
            f" by {record.decided_by}" if record.decided_by else "",
        )

    async def outcome_unknown(self, record: CallRecord) -> None:
        """Logged at start by the approvals service already."""

    async def alert(self, text: str) -> None:
        """Logged by the approvals service already."""
