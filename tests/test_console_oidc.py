"""Signing in to the console through an OpenID Connect provider (a real one on loopback), in
Chromium: the code flow with PKCE, the ID token checked, and the person mapped to an operator."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser

from broker import errors
from broker.signing import AgentCredentials
from broker.testing import Workspace
from tests.console_helpers import APPROVERS, ConsoleWorld
from tests.servers.oidc import CLIENT_ID, CLIENT_SECRET, FakeOidcProvider

SECRET_ENV = "CONSOLE_OIDC_SECRET"


@pytest.fixture
def provider() -> Iterator[FakeOidcProvider]:
    with FakeOidcProvider() as running:
        yield running


def _console(provider: FakeOidcProvider) -> dict[str, Any]:
    return {
        "operators": [
            {"name": "alice", "oidc_subject": "alice@example.com"},
            {"name": "bob"},
        ],
        "oidc": {
            "issuer": provider.issuer,
            "client_id": CLIENT_ID,
            "client_secret_env": SECRET_ENV,
        },
    }


@pytest.fixture
def oidc_world(
    ws: Workspace, browser: Browser, provider: FakeOidcProvider
) -> Iterator[ConsoleWorld]:
    ws.agent("payer", grants=["invoices.list"], approvers=APPROVERS)
    with ws.broker(
        env={SECRET_ENV: CLIENT_SECRET},
        http_listen="127.0.0.1:0",
        console=_console(provider),
    ) as running:
        yield ConsoleWorld(ws, running, AgentCredentials.generate("nobody"), browser)


def _sign_in(world: ConsoleWorld) -> Any:
    context = world.browser.new_context()
    page = context.new_page()
    page.goto(f"{world.base}/signin")
    page.get_by_role("link", name="Sign in with your identity provider").click()
    page.wait_for_load_state()
    return context, page


def test_a_person_the_provider_vouches_for_is_signed_in_as_their_operator(
    oidc_world: ConsoleWorld, provider: FakeOidcProvider
) -> None:
    context, page = _sign_in(oidc_world)
    page.wait_for_url(f"{oidc_world.base}/")
    assert "Signed in as alice" in page.inner_text("header")
    (exchange,) = provider.token_requests
    assert exchange["grant_type"] == "authorization_code" and exchange["code_verifier"]
    signed = [r for r in oidc_world.audit() if r.event == "console_sign_in"]
    assert [r.detail for r in signed] == ['{"how":"oidc","by":"console:alice"}']
    context.close()


@pytest.mark.parametrize(
    ("trouble", "said"),
    [
        ("stranger", "is not an operator"),
        ("forge", "did not check out"),
        ("wrong_nonce", "did not check out"),
        ("unverified", "not verified"),
    ],
)
def test_the_provider_s_word_is_checked(
    oidc_world: ConsoleWorld, provider: FakeOidcProvider, trouble: str, said: str
) -> None:
    if trouble == "stranger":
        provider.person = "mallory@example.com"
    elif trouble == "unverified":
        provider.verified = False
    else:
        setattr(provider, trouble, True)
    context, page = _sign_in(oidc_world)
    assert said in page.inner_text("main")
    page.goto(f"{oidc_world.base}/")
    assert page.url.startswith(f"{oidc_world.base}/signin")  # no session came of it
    context.close()


def test_an_oidc_console_without_its_client_secret_does_not_start(
    ws: Workspace, provider: FakeOidcProvider
) -> None:
    ws.agent("payer", grants=["invoices.list"])
    broker = ws.broker(env={}, http_listen="127.0.0.1:0", console=_console(provider))
    with pytest.raises(errors.ConfigError, match=f"{SECRET_ENV}.*not set"):
        broker.start()
