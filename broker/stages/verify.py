"""Stage ``verify``: the request is signed by a current key of the agent it names."""

from __future__ import annotations

from collections.abc import Callable

from broker.identity import KeyRegistry, ReplayGuard, verify_envelope
from broker.pipeline import Call, Handler, Outcome
from broker.signing import now_ms


class VerifyStage:
    """Checks signature, key, audience, RPC body, time window and nonce before anything else is
    read from the request (UNAUTHENTICATED with its own reason for each)."""

    needs = frozenset[str]()
    provides = frozenset({"verified"})

    def __init__(
        self,
        audience: str,
        window_ms: int,
        replay: ReplayGuard,
        keys: Callable[[Call], KeyRegistry] = lambda call: call.snapshot.keys,
    ) -> None:
        self._audience = audience
        self._window_ms = window_ms
        self._replay = replay
        self._keys = keys  # agent keys, or (for the admin service) admin keys only

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        call.verified = await verify_envelope(
            call.signed,
            call.rpc,
            self._keys(call),
            audience=self._audience,
            window_ms=self._window_ms,
            replay=self._replay,
            now=now_ms(),
        )
        return await call_next(call)
