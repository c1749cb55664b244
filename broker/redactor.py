"""No secret leaves the broker: its value, and its usual encodings, become ``[REDACTED:name]``.

For each secret the forms are: as is, base64 and base64url (with and without padding),
URL-encoded (``%20`` and ``+`` for spaces), hex (both cases) and JSON-escaped. Well-known token
shapes (bearer tokens, AWS keys, GitHub and Slack tokens, private key blocks) are redacted too,
wherever they come from, and reported, since an upstream that echoes them has leaked something.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus

from broker import jsonexact
from broker.outcome import digest_of

MIN_SECRET_LENGTH = 4  # shorter values would redact ordinary words; refused at `secrets set`

TOKEN_SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "private-key",
        re.compile(
            r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY-----[\s\S]{0,20000}?-----END [A-Z0-9 ]{0,40}"
            r"PRIVATE KEY-----"
        ),
    ),
    ("bearer-token", re.compile(r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]{16,}=*")),
    ("aws-access-key", re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b")),
    ("aws-secret-key", re.compile(r"(?i)aws.{0,20}secret.{0,20}[:=]\s*[\"']?[A-Za-z0-9/+]{40}\b")),
    (
        "github-token",
        re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b"),
    ),
    ("slack-token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,250}\b")),
)


def encodings(value: str) -> set[str]:
    """The forms of ``value`` that a response could carry."""
    raw = value.encode()
    forms = {
        value,
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
        quote(value, safe=""),
        quote_plus(value, safe=""),
        raw.hex(),
        raw.hex().upper(),
        json.dumps(value, ensure_ascii=True)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
    }
    forms |= {form.rstrip("=") for form in forms}
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


@dataclass
class Redaction:
    """What one pass replaced: secret names and token kinds, with counts."""

    secrets: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.secrets or self.tokens)


class Redactor:
    """Replaces known secrets (one regex over all their forms) and token shapes in text."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        self._names: dict[str, str] = {}
        for name, value in secrets.items():
            for form in encodings(value):
                self._names.setdefault(form, name)
        forms = sorted(self._names, key=len, reverse=True)  # longest first: no partial hits
        self._pattern = re.compile("|".join(map(re.escape, forms))) if forms else None

    def redact(self, text: str, found: Redaction | None = None) -> str:
        """``text`` with every secret form and token shape replaced; counts go to ``found``."""
        found = found if found is not None else Redaction()
        if self._pattern is not None and self._pattern.search(text):

            def secret(match: re.Match[str]) -> str:
                name = self._names[match.group(0)]
                found.secrets[name] = found.secrets.get(name, 0) + 1
                return f"[REDACTED:{name}]"

            text = self._pattern.sub(secret, text)
        for kind, shape in TOKEN_SHAPES:
            if shape.search(text):

                def token(match: re.Match[str], kind: str = kind) -> str:
                    found.tokens[kind] = found.tokens.get(kind, 0) + 1
                    return f"[REDACTED:{kind}]"

                text = shape.sub(token, text)
        return text


def redact_result(text: str, redactor: Redactor) -> tuple[str, Redaction, tuple[str, int]]:
    """``redact_json`` with its own count of what was replaced, and the redacted text's digest
    and size (the work a worker does: hashing 4 MB would hold the loop for ~2 ms)."""
    found = Redaction()
    redacted = redact_json(text, redactor, found)
    return redacted, found, digest_of(redacted)


def redact_json(text: str, redactor: Redactor, found: Redaction) -> str:
    """Redact JSON text and keep it JSON: text-level first (fast, the common case), then value
    by value when a secret sat where a replacement would break the syntax (a bare number)."""
    redacted = redactor.redact(text, found)
    if not found or redacted == text:
        return redacted
    try:
        jsonexact.loads(redacted)
    except jsonexact.JsonError:
        return jsonexact.dumps(_walk(jsonexact.loads(text), redactor))
    return redacted


def _walk(value: Any, redactor: Redactor) -> Any:
    if isinstance(value, dict):
        return {redactor.redact(k): _walk(v, redactor) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, redactor) for v in value]
    if isinstance(value, str):
        return redactor.redact(value)
    if isinstance(value, bool) or value is None:
        return value
    text = str(value)
    redacted = redactor.redact(text)
    return value if redacted == text else redacted
