"""Free loopback ports for the servers the tests start."""

from __future__ import annotations

import socket

ATTEMPTS = 3  # a port picked free may be taken by another suite before the server binds it


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
