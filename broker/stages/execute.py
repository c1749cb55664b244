"""Stage ``execute``: the call reaches its tool. The last stage; it calls nothing after it."""

from __future__ import annotations

from broker.adapters.http import HttpAdapter
from broker.pipeline import Call, Handler, Outcome


class ExecuteStage:
    """Sends the validated call through the adapter for the tool's kind, within the caller's
    deadline."""

    def __init__(self, http: HttpAdapter) -> None:
        self._http = http

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        assert call.action is not None
        assert call.arguments is not None
        return await self._http.execute(call.action, call.arguments, call.time_left())
