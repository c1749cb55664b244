"""Stage ``execute``: the call reaches its tool. The last stage; it calls nothing after it."""

from __future__ import annotations

from broker import errors
from broker.adapters.command import CommandAdapter
from broker.adapters.http import HttpAdapter
from broker.identity import now_ms
from broker.manifest import CommandTool
from broker.pipeline import Call, Handler, Outcome
from broker.secrets import Injected, Vault


class ExecuteStage:
    """Looks up the secrets the agent's policy maps to the tool's credential slots, then runs
    the call through the adapter for the tool's kind, within the caller's deadline."""

    def __init__(self, http: HttpAdapter, command: CommandAdapter, vault: Vault) -> None:
        self._http = http
        self._command = command
        self._vault = vault

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        assert call.action is not None
        assert call.arguments is not None
        call.credentials = self._credentials(call)
        if isinstance(call.action.tool, CommandTool):
            return await self._command.execute(
                call.action, call.arguments, call.time_left(), call.credentials
            )
        return await self._http.execute(
            call.action,
            call.arguments,
            call.time_left(),
            call.credentials,
            call.request.idempotency_key,
        )

    def _credentials(self, call: Call) -> list[Injected]:
        assert call.action is not None
        assert call.verified is not None
        tool = call.action.tool
        if not tool.credentials:
            return []
        policy = call.snapshot.policies.policies[call.verified.agent]
        injected = []
        now = now_ms()
        for slot, spec in tool.credentials.items():
            name = policy.secret_for(tool.name, slot)
            if name is None:  # the checker refuses such a set; kept as a guard
                raise errors.SecretNotSet(f"no secret is mapped for {tool.name}.{slot}")
            injected.append(Injected(slot, spec, self._vault.get(name, now)))
        return injected
