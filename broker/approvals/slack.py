"""Approvals in Slack: the question with the exact arguments and three buttons, the signed
click that decides, and the message updated with how it ended.

The bot token and the signing secret are secrets in the broker's store (``slack-bot-token``,
``slack-signing-secret`` unless the config names others), never in a file. The API base URL is
configurable, so tests talk to a fake Slack on loopback. HTTP goes through httpx: a few calls a
decision, where its API matters more than speed.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qs

import httpx
from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)
from slack_sdk.signature import SignatureVerifier

from broker import errors
from broker.approvals.service import Approvals
from broker.approvals.stored_calls import why_in_words
from broker.policy import Policy
from broker.settings import SlackSettings
from broker.signing import now_ms
from broker.storage.interfaces import CallStore
from broker.storage.records import CallRecord
from broker.vault import Vault

log = logging.getLogger(__name__)

SECTION_LIMIT = 2900  # Slack refuses section text over 3,000 characters
MAX_BODY = 64 * 1024


class SlackNotifier:
    """Posts approval questions, reminders and outcomes to Slack."""

    def __init__(self, settings: SlackSettings, vault: Vault, calls: CallStore) -> None:
        self.settings = settings
        self._vault = vault
        self._calls = calls  # where the question's message is kept, to update it later
        self._http = httpx.AsyncClient(base_url=settings.api_url, timeout=10.0)

    def channel(self, policy: Policy | None) -> str:
        """The policy's channel, or the config's."""
        return (policy.slack_channel if policy and policy.slack_channel else None) or (
            self.settings.channel
        )

    def where(self, record: CallRecord, policy: Policy | None) -> str:
        """Where the question was asked."""
        return f"asked in Slack channel {self.channel(policy)}"

    async def asked(self, record: CallRecord, policy: Policy | None) -> None:
        """Post the question; remember where, to update it later."""
        channel = self.channel(policy)
        answer = await self.api(
            "chat.postMessage",
            {
                "channel": channel,
                "text": f"{record.agent} asks to run {record.tool}",
                "blocks": _blocks(question_blocks(record)),
            },
        )
        if answer:
            where = {"channel": answer.get("channel", channel), "ts": answer.get("ts", "")}
            await self._calls.update(record.call_id, slack=json.dumps(where))

    async def reminded(self, record: CallRecord, policy: Policy | None) -> None:
        """A reply in the question's thread, shown in the channel too."""
        where = _where(await self._fresh(record))
        await self.api(
            "chat.postMessage",
            {
                "channel": where.get("channel", self.channel(policy)),
                "thread_ts": where.get("ts"),
                "reply_broadcast": True,
                "text": f"Still waiting for a decision on {record.agent}'s {record.tool} "
                f"(call {record.call_id}); the agent was told to stop and wait.",
            },
        )

    async def decided(self, record: CallRecord) -> None:
        """Replace the buttons with how the call ended and who decided."""
        record = await self._fresh(record)
        where = _where(record)
        if not where.get("ts"):
            return
        await self.api(
            "chat.update",
            {
                "channel": where["channel"],
                "ts": where["ts"],
                "text": f"{record.agent} {record.tool}: {record.state}",
                "blocks": _blocks([*question_blocks(record, buttons=False), outcome_block(record)]),
            },
        )

    async def outcome_unknown(self, record: CallRecord) -> None:
        """Ask a human to reconcile a write whose outcome was lost."""
        await self.api(
            "chat.postMessage",
            {
                "channel": self.settings.channel,
                "text": f"Call {record.call_id} ({record.agent} {record.tool}) began before the "
                "broker stopped and its outcome is unknown. It will not run again: please "
                "check the tool and reconcile it by hand.",
            },
        )

    async def alert(self, text: str) -> None:
        """A budget at 80% or 100%, an automatic freeze: to the approvals channel."""
        await self.api(
            "chat.postMessage",
            {"channel": self.settings.channel, "text": f":rotating_light: {text}"},
        )

    async def ephemeral(self, channel: str, user: str, text: str) -> None:
        """A message only ``user`` sees."""
        await self.api("chat.postEphemeral", {"channel": channel, "user": user, "text": text})

    async def api(self, method: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """Call a Slack Web API method; None (and a log line) when it did not work."""
        try:
            token = (await self._vault.get(self.settings.bot_token_secret, now_ms())).value
        except errors.BrokerError as exc:
            log.error("cannot call Slack %s: %s", method, exc.message)
            return None
        try:
            response = await self._http.post(
                method, json=payload, headers={"Authorization": f"Bearer {token}"}
            )
            answer: dict[str, Any] = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.error("Slack %s failed: %s", method, type(exc).__name__)
            return None
        if not answer.get("ok"):
            log.error("Slack %s answered %s", method, answer.get("error", "not ok"))
            return None
        return answer

    async def _fresh(self, record: CallRecord) -> CallRecord:
        return await self._calls.get(record.call_id) or record

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._http.aclose()


class SlackInteractions:
    """The HTTP endpoint for Slack's button clicks: signature first, then the approver, then a
    compare-and-set decision; acknowledged at once, the message is updated when the call ends."""

    def __init__(self, notifier: SlackNotifier, approvals: Approvals, vault: Vault) -> None:
        self._notifier = notifier
        self._approvals = approvals
        self._vault = vault

    async def handle(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        """(HTTP status, text) for one interactivity request."""
        if len(body) > MAX_BODY:
            return 413, "too large"
        try:
            secret = await self._vault.get(self._notifier.settings.signing_secret_secret, now_ms())
        except errors.BrokerError as exc:
            log.error("cannot check a Slack click: %s", exc.message)
            return 503, "the broker cannot check Slack signatures now"
        verifier = SignatureVerifier(secret.value)
        if not verifier.is_valid(
            body, headers.get("x-slack-request-timestamp"), headers.get("x-slack-signature")
        ):
            log.warning("refused a Slack request with a bad or stale signature")
            return 401, "bad signature"
        try:
            payload = json.loads(parse_qs(body.decode())["payload"][0])
        except (KeyError, IndexError, TypeError, ValueError, UnicodeDecodeError):
            return 400, "not a block action"
        return (200, "") if await self.on_payload(payload) else (400, "not a block action")

    async def on_payload(self, payload: Any) -> bool:
        """Act on one interaction payload (from HTTP after its signature, or from Socket Mode);
        False when it is not a button click of ours."""
        try:
            action = payload["actions"][0]
            user = str(payload["user"]["id"])
            call_id = str(action["value"])
            what = str(action["action_id"])
            channel = str((payload.get("channel") or {}).get("id", self._notifier.settings.channel))
        except (KeyError, IndexError, TypeError, AttributeError):
            return False
        await self._act(what, call_id, user, channel)
        return True

    async def _act(self, what: str, call_id: str, user: str, channel: str) -> None:
        record = await self._approvals.calls.get(call_id)
        if record is None:
            await self._notifier.ephemeral(channel, user, f"No call {call_id} here.")
            return
        policy = self._approvals.snapshot().policies.policies.get(record.agent)
        if policy is None or user not in policy.approvers:
            log.warning(
                "Slack user %s is not an approver of %s; click on %s ignored",
                user,
                record.agent,
                call_id,
            )
            await self._notifier.ephemeral(
                channel, user, f"You are not an approver of {record.agent}; nothing changed."
            )
            return
        by = f"slack:{user}"
        try:
            if what == "freeze":
                await self._approvals.freeze(record.agent, f"frozen from Slack on {call_id}", by)
            elif what in ("approve", "deny"):
                await self._approvals.decide(call_id, what == "approve", by)
            else:
                return
        except errors.AlreadyDecided as exc:
            await self._notifier.ephemeral(channel, user, exc.message)


def question_blocks(record: CallRecord, *, buttons: bool = True) -> list[Block]:
    """The question: who, why, the exact arguments (all of them), and the buttons."""
    why = json.loads(record.why) if record.why else {}
    arguments = json.dumps(json.loads(record.arguments), indent=2, ensure_ascii=False)
    blocks: list[Block] = [
        HeaderBlock(text=f"Approve {record.tool}?"[:150]),
        SectionBlock(
            fields=[
                MarkdownTextObject(text=f"*Agent*\n{record.agent}"),
                MarkdownTextObject(text=f"*Task*\n{record.task_id or '-'}"),
                MarkdownTextObject(text=f"*Intent*\n{_plain(record.intent) or '-'}"),
                MarkdownTextObject(text=f"*Call*\n{record.call_id}"),
            ]
        ),
        SectionBlock(text=MarkdownTextObject(text=f"*Why a human:* {_plain(why_in_words(why))}")),
    ]
    for path, value, origin in why.get("tainted", []):
        blocks.append(
            SectionBlock(
                text=MarkdownTextObject(
                    text=f":warning: `{path}` holds `{_plain(value)}`, which came from untrusted "
                    f"content earlier in this task: {_plain(origin)}"
                )
            )
        )
    for start in range(0, len(arguments), SECTION_LIMIT - 8):  # folded, never cut short
        chunk = arguments[start : start + SECTION_LIMIT - 8]
        blocks.append(SectionBlock(text=MarkdownTextObject(text=f"```{chunk}```")))
    if buttons:
        blocks.append(
            ActionsBlock(
                elements=[
                    ButtonElement(
                        text="Approve", action_id="approve", value=record.call_id, style="primary"
                    ),
                    ButtonElement(
                        text="Deny", action_id="deny", value=record.call_id, style="danger"
                    ),
                    ButtonElement(text="Freeze agent", action_id="freeze", value=record.call_id),
                ]
            )
        )
    return blocks


def outcome_block(record: CallRecord) -> Block:
    """How the call ended, and who decided."""
    who = (
        f" by <@{record.decided_by.removeprefix('slack:')}>"
        if record.decided_by.startswith("slack:")
        else (f" by {record.decided_by}" if record.decided_by else "")
    )
    words = {
        "approved": "Approved",
        "executing": "Approved, running",
        "done": "Approved and done",
        "tool_error": "Approved; the tool failed",
        "failed": "Approved; the call failed",
        "denied": "Denied",
        "expired": "Expired: nobody decided",
        "cancelled": "Cancelled",
        "outcome_unknown": "Outcome unknown: reconcile by hand",
    }
    return ContextBlock(
        elements=[MarkdownTextObject(text=f"*{words.get(record.state, record.state)}*{who}")]
    )


def _plain(text: str) -> str:
    # Slack mrkdwn: neutralise the characters that would format or mention
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _blocks(blocks: list[Block]) -> list[dict[str, Any]]:
    return [block.to_dict() for block in blocks]


def _where(record: CallRecord) -> dict[str, str]:
    return json.loads(record.slack) if record.slack else {}
