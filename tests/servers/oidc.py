"""A small OpenID Connect provider on loopback for the console's sign-in tests: discovery,
an authorization endpoint that signs in whoever ``person`` names (no login form), a token
endpoint that checks the client secret and the PKCE verifier, and its signing keys. It can
also misbehave on purpose (a token signed by a key it does not publish, a wrong nonce)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

CLIENT_ID = "toolbroker-console"
CLIENT_SECRET = "fake-oidc-client-secret"


class FakeOidcProvider:
    """The provider; ``person`` is the email it signs in next."""

    def __init__(self) -> None:
        self.person = "alice@example.com"
        self.verified = True
        self.forge = False  # sign with a key the provider does not publish
        self.wrong_nonce = False
        self.token_requests: list[dict[str, str]] = []
        self._key = RSAKey.generate_key(2048, parameters={"kid": "published"})
        self._rogue = RSAKey.generate_key(2048, parameters={"kid": "published"})
        self._codes: dict[str, dict[str, str]] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def issuer(self) -> str:
        """The issuer URL."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeOidcProvider:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    def _authorize(self, query: dict[str, str]) -> str:
        code = secrets.token_urlsafe(16)
        self._codes[code] = query
        answer = {"code": code, "state": query.get("state", "")}
        return f"{query['redirect_uri']}?{urlencode(answer)}"

    def _token(self, form: dict[str, str], authorization: str) -> tuple[int, dict[str, Any]]:
        self.token_requests.append(form)
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if authorization != f"Basic {expected}":
            return 401, {"error": "invalid_client"}
        asked = self._codes.pop(form.get("code", ""), None)
        if asked is None:
            return 400, {"error": "invalid_grant"}
        digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
        challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        if challenge != asked.get("code_challenge"):
            return 400, {"error": "invalid_grant", "error_description": "PKCE"}
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": CLIENT_ID,
            "sub": f"user-{self.person}",
            "email": self.person,
            "email_verified": self.verified,
            "nonce": "not-yours" if self.wrong_nonce else asked.get("nonce", ""),
            "iat": now,
            "exp": now + 300,
        }
        key = self._rogue if self.forge else self._key
        token = jwt.encode({"alg": "RS256", "kid": "published"}, claims, key)
        return 200, {"access_token": "at", "token_type": "Bearer", "id_token": token}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                where = urlsplit(self.path)
                if where.path == "/.well-known/openid-configuration":
                    self._json(200, provider._discovery())
                elif where.path == "/jwks":
                    self._json(200, KeySet([provider._key]).as_dict(private=False))
                elif where.path == "/authorize":
                    query = {k: v[0] for k, v in parse_qs(where.query).items()}
                    self.send_response(302)
                    self.send_header("Location", provider._authorize(query))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self._json(404, {"error": "not found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                status, body = provider._token(form, self.headers.get("Authorization", ""))
                self._json(status, body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the tests assert on what the provider recorded

        return Handler
