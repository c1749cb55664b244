"""Database URLs as they may be shown: never with their password."""

from __future__ import annotations

from urllib.parse import urlsplit


def redacted(url: str) -> str:
    """The URL without its password, fit for a log line or an error message."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "(an unreadable database URL)"
    if password is None:
        return url
    netloc = parts.netloc.replace(f":{password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
