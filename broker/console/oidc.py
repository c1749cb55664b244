"""Sign-in through an OpenID Connect provider: the authorization code flow with PKCE.

authlib makes the authorization URL and exchanges the code (client secret from the
environment, never from a file); joserfc (authlib's own JOSE library) checks the ID token's
signature against the provider's published keys and its issuer, audience, nonce and expiry.
The claim ``console.oidc.claim`` (email by default) must equal an operator's ``oidc_subject``:
the provider says who the person is, the broker's config says whether they are an operator.

The flow's state, nonce and PKCE verifier travel in a signed cookie (SameSite=Lax: the
provider's redirect back is a navigation from another site), so any replica can finish it.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Mapping
from typing import Any

import httpx
from aiohttp import web
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from broker import errors
from broker.console.context import FLOW_COOKIE, ConsoleParts
from broker.console.replies import refused, see_other
from broker.console.signin import SignIn
from broker.console.tokens import TokenRefused
from broker.settings import OidcSettings
from broker.signing import now_ms

log = logging.getLogger(__name__)

FLOW_TTL_S = 600.0
ALGORITHMS = ["RS256", "ES256", "PS256", "EdDSA"]


class OidcLogin:
    """The two ends of the flow: ``start`` sends the person to the provider, ``callback``
    takes them back in."""

    def __init__(
        self, settings: OidcSettings, parts: ConsoleParts, signin: SignIn, env: Mapping[str, str]
    ) -> None:
        secret = env.get(settings.client_secret_env)
        if not secret:
            raise errors.ConfigError(
                "console.oidc.client_secret_env",
                f"the environment variable {settings.client_secret_env} (the OIDC client "
                "secret) is not set",
            )
        self._settings = settings
        self._secret = secret
        self._parts = parts
        self._signin = signin
        self._meta: dict[str, Any] | None = None

    def redirect_uri(self, request: web.Request) -> str:
        """Where the provider sends people back (register it there): under public_url, or
        without it the address the browser used (the provider refuses any other)."""
        base = self._parts.console.public_url or f"{request.scheme}://{request.host}"
        return f"{base}/console/oidc/callback"

    async def start(self, request: web.Request) -> web.Response:
        """GET /console/oidc/start."""
        try:
            meta = await self._discovered()
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            log.error("cannot read the OIDC provider's discovery document: %s", exc)
            return _unreachable()
        state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
        async with self._client(self.redirect_uri(request)) as client:
            address, _ = client.create_authorization_url(
                meta["authorization_endpoint"], state=state, code_verifier=verifier, nonce=nonce
            )
        flow = self._parts.tokens.issue(
            "flow", json.dumps([state, nonce, verifier]), FLOW_TTL_S, now_ms()
        )
        response = see_other(address)
        response.set_cookie(
            FLOW_COOKIE,
            flow,
            max_age=int(FLOW_TTL_S),
            path="/console/oidc",
            httponly=True,
            samesite="Lax",
            secure=self._parts.secure_cookies,
        )
        return response

    async def callback(self, request: web.Request) -> web.Response:
        """GET /console/oidc/callback?code=...&state=..."""
        try:
            flow = self._parts.tokens.read("flow", request.cookies.get(FLOW_COOKIE, ""), now_ms())
            state, nonce, verifier = json.loads(flow.user)
        except (TokenRefused, ValueError):
            return _failed("This sign-in began too long ago, or in another browser.")
        if request.query.get("error"):
            return _failed(f"The identity provider said: {request.query['error'][:200]}.")
        if not secrets.compare_digest(request.query.get("state", ""), state):
            return _failed("The answer does not belong to this sign-in.")
        try:
            claims = await self._claims(request, nonce, verifier)
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            log.error("OIDC code exchange failed: %s", type(exc).__name__)
            return _unreachable()
        except JoseError as exc:
            log.warning("refused an OIDC ID token: %s", exc)
            return _failed("The identity provider's token did not check out.")
        subject = claims.get(self._settings.claim)
        if self._settings.claim == "email" and claims.get("email_verified") is False:
            return _failed("Your email address is not verified at the identity provider.")
        operator = next(
            (o for o in self._parts.console.operators if subject and o.oidc_subject == subject),
            None,
        )
        if operator is None:
            log.warning("OIDC sign-in of %r, who is not an operator", str(subject)[:100])
            return _failed(f"{str(subject)[:100]} is not an operator of this console.")
        await self._signin.audit_oidc(operator)
        response = self._signin.begin_session(operator)
        response.del_cookie(FLOW_COOKIE, path="/console/oidc")
        return response

    async def _claims(self, request: web.Request, nonce: str, verifier: str) -> dict[str, Any]:
        meta = await self._discovered()
        async with self._client(self.redirect_uri(request)) as client:
            token = await client.fetch_token(
                meta["token_endpoint"], code=request.query.get("code", ""), code_verifier=verifier
            )
            keys = (await client.get(meta["jwks_uri"])).raise_for_status().json()
        decoded = jwt.decode(str(token["id_token"]), KeySet.import_key_set(keys), ALGORITHMS)
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": self._settings.issuer},
            aud={"essential": True, "value": self._settings.client_id},
            nonce={"essential": True, "value": nonce},
            exp={"essential": True},
        ).validate(decoded.claims)
        return dict(decoded.claims)

    async def _discovered(self) -> dict[str, Any]:
        if self._meta is None:
            address = f"{self._settings.issuer}/.well-known/openid-configuration"
            async with httpx.AsyncClient(timeout=10.0) as client:
                meta = (await client.get(address)).raise_for_status().json()
            if meta.get("issuer", "").rstrip("/") != self._settings.issuer:
                raise ValueError("the discovery document names another issuer")
            for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                meta[key] = str(meta[key])
            self._meta = meta
        return self._meta

    def _client(self, redirect_uri: str) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            self._settings.client_id,
            self._secret,
            scope="openid email profile",
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            timeout=10.0,
        )


def _failed(message: str) -> web.Response:
    return refused(403, "Sign-in failed", f"{message} Try again from the sign-in page.")


def _unreachable() -> web.Response:
    return refused(
        503, "Identity provider unreachable", "The broker cannot reach the identity provider now."
    )
