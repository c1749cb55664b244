"""The admin service's stage: freeze, unfreeze, list and decide, for operators holding an admin
key. Agent keys never verify here: admin requests are checked against admin keys only."""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker import errors
from broker.approvals.service import Approvals
from broker.approvals.stored_calls import PENDING, UNKNOWN
from broker.identity import KeyRegistry, RegisteredKey
from broker.pipeline import Call, Handler, Outcome
from broker.settings import BrokerSettings
from broker.signing import AgentCredentials, now_ms
from broker.storage.records import CallRecord
from broker.v1 import broker_pb2 as pb

LOCAL_ADMIN = "local-admin"


def admin_key_path(settings: BrokerSettings) -> Path:
    """The broker's own admin key: made on first start, used by the CLI on the same machine
    (``admin_key_file``, the same for every replica, or the data directory's own)."""
    return settings.admin_key_file or settings.data_dir / "admin.key"


def admin_keys(settings: BrokerSettings) -> KeyRegistry:
    """The local admin key (made if missing) and the operators' keys the config names."""
    path = admin_key_path(settings)
    if not path.exists():
        AgentCredentials.generate(LOCAL_ADMIN, key_id=LOCAL_ADMIN).save(path)
    local = AgentCredentials.load(path)
    keys = [RegisteredKey(local.key_id, LOCAL_ADMIN, local.private_key.public_key(), None)]
    for key in settings.admin_keys:
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(key.ed25519))
        keys.append(RegisteredKey(key.id, key.name, public, None))
    return KeyRegistry(keys)


class AdminStage:
    """Carries out one admin request; every one is audited by the stage around it."""

    needs = frozenset({"verified"})
    provides = frozenset[str]()

    def __init__(self, approvals: Approvals) -> None:
        self._approvals = approvals

    async def __call__(self, call: Call, call_next: Handler) -> Outcome:
        envelope = call.verified.envelope
        by = f"admin:{call.agent}"
        if call.rpc == "freeze":
            target = _target(envelope.freeze.agent, envelope.freeze.all)
            reason = envelope.freeze.reason or "no reason given"
            cancelled = await self._approvals.freeze(target, reason, by)
            return _reply(f"{_name(target)} frozen; {cancelled} pending call(s) cancelled")
        if call.rpc == "unfreeze":
            target = _target(envelope.unfreeze.agent, envelope.unfreeze.all)
            lifted = await self._approvals.freezes.unfreeze(target)
            return _reply(f"{_name(target)} {'unfrozen' if lifted else 'was not frozen'}")
        if call.rpc == "decide":
            request = envelope.decide
            record = await self._approvals.decide(
                request.call_id, request.approve, by, request.reason
            )
            verb = "approved; it runs now" if request.approve else "denied"
            return _reply(f"call {record.call_id} ({record.agent} {record.tool}) {verb}")
        if call.rpc == "reconcile":
            if not envelope.reconcile.note:
                raise errors.InvalidArguments("say what you found in the tool (note)")
            record = await self._approvals.reconcile(
                envelope.reconcile.call_id, by, envelope.reconcile.note
            )
            return _reply(f"call {record.call_id} reconciled: {record.note}")
        if call.rpc == "list_approvals":
            return Outcome(
                reply=pb.ApprovalList(
                    calls=[
                        _pending(r)
                        for r in await self._listed(envelope.list_approvals.include_decided)
                    ]
                )
            )
        raise errors.MethodMismatch(f"no admin RPC '{call.rpc}'")

    async def _listed(self, include_decided: bool) -> list[CallRecord]:
        since = now_ms() - 86_400_000 if include_decided else 0
        return await self._approvals.calls.in_states((PENDING, UNKNOWN), updated_since_ms=since)


def _target(agent: str, everyone: bool) -> str:
    if everyone:
        return "*"
    if not agent:
        raise errors.InvalidArguments("name an agent, or ask for all of them")
    return agent


def _name(target: str) -> str:
    return "every agent" if target == "*" else f"agent '{target}'"


def _reply(message: str) -> Outcome:
    return Outcome(reply=pb.AdminResult(message=message))


def _pending(record: CallRecord) -> pb.PendingCall:
    return pb.PendingCall(
        call_id=record.call_id,
        agent=record.agent,
        tool=record.tool,
        arguments_json=record.arguments,
        intent=record.intent,
        task_id=record.task_id,
        why=record.why,
        created_ms=record.created_ms,
        escalate_at_ms=record.escalate_at_ms,
        expires_at_ms=record.expires_at_ms,
        state=record.state,
        decided_by=record.decided_by,
    )
