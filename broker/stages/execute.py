"""Stage ``execute``: the call reaches its tool. The last stage; it calls nothing after it."""

from __future__ import annotations

from broker import errors
from broker.adapters.command_adapter import CommandAdapter
from broker.adapters.http_adapter import HttpAdapter
from broker.manifest import CommandTool
from broker.pipeline import Call, Handler, Outcome
from broker.signing import now_ms
from broker.vault import Injected, Vault


class ExecuteStage:
    """Looks up the secrets the agent's policy maps to the tool's credential slots, then runs
    the call through the adapter for the tool's kind, within the caller's deadline."""

    needs = frozenset({"verified", "action", "arguments"})
    provides = frozenset[str]()

    def __init__(self, http: HttpAdapter, command: CommandAdapter, vault: Vault) -> None:
        self._http = http
        self._command = command
        self._vault = vault

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        call.credentials = await self._credentials(call)
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

    async def _credentials(self, call: Call) -> list[Injected]:
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
            injected.append(Injected(slot, spec, await self._vault.get(name, now)))
        return injected
