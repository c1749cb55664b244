"""Slack's clicks over Socket Mode, for brokers that cannot receive inbound HTTP: the broker
opens a websocket to Slack with the app-level token and Slack delivers the interactions on it.
Each envelope is acknowledged at once, then handled like a signed HTTP click (minus the
signature: the connection itself is authenticated by the token)."""

from __future__ import annotations

import logging

from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from broker import errors
from broker.approvals.slack import SlackInteractions
from broker.settings import SlackSettings
from broker.signing import now_ms
from broker.vault import Vault

log = logging.getLogger(__name__)


class SlackSocketMode:
    """A Socket Mode connection that feeds button clicks to ``SlackInteractions``."""

    def __init__(self, settings: SlackSettings, vault: Vault, interactions: SlackInteractions):
        self._settings = settings
        self._vault = vault
        self._interactions = interactions
        self._client: SocketModeClient | None = None

    async def start(self) -> bool:
        """Connect; False (and a log line) when the app token is not available."""
        try:
            token = (await self._vault.get(self._settings.app_token_secret, now_ms())).value
        except errors.BrokerError as exc:
            log.error("Slack Socket Mode is off: %s; decide with the CLI meanwhile", exc.message)
            return False
        web = AsyncWebClient(base_url=self._settings.api_url)
        self._client = SocketModeClient(app_token=token, web_client=web)
        self._client.socket_mode_request_listeners.append(self._on_request)  # type: ignore[arg-type]
        await self._client.connect()  # type: ignore[no-untyped-call]
        return True

    async def _on_request(self, client: SocketModeClient, request: SocketModeRequest) -> None:
        await client.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id))
        if request.type == "interactive":
            await self._interactions.on_payload(request.payload)

    async def close(self) -> None:
        """Disconnect."""
        if self._client is not None:
            await self._client.close()  # type: ignore[no-untyped-call]
            self._client = None
