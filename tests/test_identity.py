"""Every way a request can fail to prove who sent it, through a real server, each with its
own reason and an audit row."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest

from broker import errors
from broker.client import BrokerClient
from broker.signing import AgentCredentials, now_ms
from broker.testing import FakeUpstream, RunningBroker, Workspace
from broker.v1 import broker_pb2 as pb


def _call_envelope(credentials: AgentCredentials, audience: str = "broker.test") -> pb.Envelope:
    envelope = credentials.envelope(audience)
    envelope.call.CopyFrom(pb.CallRequest(tool="invoices.list", arguments_json="{}"))
    return envelope


def _refused(
    client: BrokerClient, signed: pb.SignedRequest, method: str = "Call"
) -> errors.BrokerError:
    with pytest.raises(errors.Unauthenticated) as refused:
        client.send(method, signed)
    assert refused.value.status_code.name == "UNAUTHENTICATED"
    return refused.value


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


Forge = Callable[[AgentCredentials, AgentCredentials], pb.SignedRequest]


def _other_signature(agent: AgentCredentials, other: AgentCredentials) -> pb.SignedRequest:
    signed = agent.sign(_call_envelope(agent))
    signed.signature = other.private_key.sign(signed.payload)
    return signed


def _flipped_byte(agent: AgentCredentials, other: AgentCredentials) -> pb.SignedRequest:
    signed = agent.sign(_call_envelope(agent))
    signed.payload = _flip(signed.payload, len(signed.payload) // 2)
    return signed


def _short_signature(agent: AgentCredentials, other: AgentCredentials) -> pb.SignedRequest:
    signed = agent.sign(_call_envelope(agent))
    signed.signature = signed.signature[:63]
    return signed


def _unknown_key(agent: AgentCredentials, other: AgentCredentials) -> pb.SignedRequest:
    stranger = AgentCredentials.generate("invoice-agent", key_id="not-in-any-policy")
    return stranger.sign(_call_envelope(stranger))


def _another_agents_key(agent: AgentCredentials, other: AgentCredentials) -> pb.SignedRequest:
    # `other` signs correctly with its own key but claims to be invoice-agent.
    envelope = _call_envelope(agent)
    return other.sign(envelope)


def _wrong_audience(agent: AgentCredentials, other: AgentCredentials) -> pb.SignedRequest:
    return agent.sign(_call_envelope(agent, audience="broker.other"))


def _stale(agent: AgentCredentials, other: AgentCredentials) -> pb.SignedRequest:
    envelope = _call_envelope(agent)
    envelope.issued_at_ms = now_ms() - 31_000
    return agent.sign(envelope)


def _future(agent: AgentCredentials, other: AgentCredentials) -> pb.SignedRequest:
    envelope = _call_envelope(agent)
    envelope.issued_at_ms = now_ms() + 31_000
    return agent.sign(envelope)


def _garbage(agent: AgentCredentials, other: AgentCredentials) -> pb.SignedRequest:
    payload = b"\xff\xff\xff\xff garbage, not a protobuf"
    return pb.SignedRequest(
        payload=payload, key_id=agent.key_id, signature=agent.private_key.sign(payload)
    )


def _short_nonce(agent: AgentCredentials, other: AgentCredentials) -> pb.SignedRequest:
    envelope = _call_envelope(agent)
    envelope.nonce = "abc"
    return agent.sign(envelope)


@pytest.mark.parametrize(
    ("forge", "reason", "message"),
    [
        (_other_signature, "BAD_SIGNATURE", "does not match"),
        (_flipped_byte, "BAD_SIGNATURE", "does not match"),
        (_short_signature, "BAD_SIGNATURE", "does not match"),
        (_unknown_key, "UNKNOWN_KEY", "not in any policy"),
        (_another_agents_key, "UNKNOWN_KEY", "does not belong to agent 'invoice-agent'"),
        (_wrong_audience, "WRONG_AUDIENCE", "signed for 'broker.other'"),
        (_stale, "STALE_REQUEST", "s old"),
        (_future, "STALE_REQUEST", "in the future"),
        (_garbage, "MALFORMED_ENVELOPE", "not a serialized"),
        (_short_nonce, "MALFORMED_ENVELOPE", "nonce"),
    ],
)
def test_each_failure_has_its_own_reason_and_is_audited(
    ws: Workspace,
    agent: AgentCredentials,
    upstream: FakeUpstream,
    forge: Forge,
    reason: str,
    message: str,
) -> None:
    other = ws.agent("other-agent")
    with ws.broker() as broker, broker.client(agent) as fresh:
        error = _refused(fresh, forge(agent, other))
    assert error.reason == reason
    assert message in error.message
    assert upstream.requests == []
    row = ws.audit(error.call_id)[-1]
    assert (row.decision, row.reason, row.agent) == ("refused", reason, "")


def test_a_body_for_another_rpc_is_a_method_mismatch(
    client: BrokerClient, agent: AgentCredentials, upstream: FakeUpstream
) -> None:
    call_body = agent.sign(_call_envelope(agent))
    error = _refused(client, call_body, method="ListTools")
    assert error.reason == "METHOD_MISMATCH"

    list_body = client.signer.list_tools()
    error = _refused(client, list_body, method="Call")
    assert error.reason == "METHOD_MISMATCH"
    assert upstream.requests == []


def test_a_replayed_request_is_refused(
    client: BrokerClient, agent: AgentCredentials, upstream: FakeUpstream
) -> None:
    signed = agent.sign(_call_envelope(agent))
    assert client.send("Call", signed).state == pb.CallResult.DONE
    error = _refused(client, signed)
    assert error.reason == "REPLAYED_NONCE"
    assert len(upstream.requests) == 1


def test_a_replay_is_refused_after_a_restart(
    broker: RunningBroker, agent: AgentCredentials, upstream: FakeUpstream
) -> None:
    signed = agent.sign(_call_envelope(agent))
    with broker.client(agent) as client:
        assert client.send("Call", signed).state == pb.CallResult.DONE
    broker.restart()
    with broker.client(agent) as client:
        error = _refused(client, signed)
        assert error.reason == "REPLAYED_NONCE"
        # a fresh request from the same agent still goes through
        assert client.call("invoices.list", {}).state == "DONE"
    assert len(upstream.requests) == 2


def test_the_same_nonce_with_a_new_signature_is_still_a_replay(
    client: BrokerClient, agent: AgentCredentials
) -> None:
    envelope = _call_envelope(agent)
    client.send("Call", agent.sign(envelope))
    envelope.issued_at_ms += 1  # different bytes, newly signed, same nonce
    assert _refused(client, agent.sign(envelope)).reason == "REPLAYED_NONCE"


def test_revoked_and_expired_keys_are_refused_but_verify_only_keys_verify(
    ws: Workspace, upstream: FakeUpstream
) -> None:
    revoked = AgentCredentials.generate("rotating", key_id="rotating-old")
    expired = AgentCredentials.generate("rotating", key_id="rotating-expired")
    previous = AgentCredentials.generate("rotating", key_id="rotating-previous")
    ws.agent(
        "rotating",
        grants=["invoices.list"],
        keys=[
            {"id": revoked.key_id, "ed25519": revoked.public_key_b64, "status": "revoked"},
            {
                "id": expired.key_id,
                "ed25519": expired.public_key_b64,
                "not_after": "2020-01-01T00:00:00Z",
            },
            {"id": previous.key_id, "ed25519": previous.public_key_b64, "status": "verify-only"},
        ],
    )
    with ws.broker() as broker:
        for credentials, expected in ((revoked, "is revoked"), (expired, "not_after")):
            with broker.client(credentials) as client, pytest.raises(errors.KeyRevoked) as e:
                client.call("invoices.list", {})
            assert expected in e.value.message
        with broker.client(previous) as client:
            assert client.call("invoices.list", {}).state == "DONE"
    assert len(upstream.requests) == 1


def test_the_request_window_is_configurable(ws: Workspace, agent: AgentCredentials) -> None:
    with ws.broker(request_window="5s") as broker, broker.client(agent) as client:
        envelope = _call_envelope(agent)
        envelope.issued_at_ms = now_ms() - 6_000
        assert _refused(client, agent.sign(envelope)).reason == "STALE_REQUEST"
        envelope.issued_at_ms = now_ms() - 2_000
        envelope.nonce = secrets.token_hex(16)
        assert client.send("Call", agent.sign(envelope)).state == pb.CallResult.DONE
