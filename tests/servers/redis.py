"""A real Redis server for the tests: Debian's ``redis-server`` on a free port on 127.0.0.1,
with a random password, nothing saved to disk (``--save ''``), run as ``nobody`` when the tests
run as root."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

from tests.servers.ports import ATTEMPTS, free_port

START_S = 30.0


def redis_program() -> str | None:
    """The redis-server program, if installed."""
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )


class RedisServer:
    """``with RedisServer(program) as server``: ``url``; ``stop()`` and ``start()`` again."""

    def __init__(self, program: str) -> None:
        self._program = program
        self._folder = Path(tempfile.mkdtemp(prefix="toolbroker-redis-"))
        self._password = secrets.token_urlsafe(18)
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """A connection URL with the password."""
        return f"redis://:{self._password}@127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start it (on the same port, when it ran before) and wait until it answers."""
        for _ in range(1 if self.port else ATTEMPTS):
            self.port = self.port or free_port()
            if self._launch():
                return self
            self.port = 0
        raise RuntimeError("redis-server did not start: " + self._log())

    def stop(self) -> None:
        """Stop the server (what it held is gone: nothing is saved)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
        self._process = None

    def remove(self) -> None:
        """Stop the server and remove its folder."""
        self.stop()
        shutil.rmtree(self._folder, ignore_errors=True)

    def _launch(self) -> bool:
        user = None
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self._folder, nobody.pw_uid, nobody.pw_gid)
            user = nobody.pw_uid
        log = (self._folder / "redis.log").open("wb")
        config = (
            f'port {self.port}\nbind 127.0.0.1\nsave ""\nappendonly no\n'
            f"dir {self._folder}\nrequirepass {self._password}\n"
        )
        self._process = subprocess.Popen(
            [self._program, "-"],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            user=user,
            cwd=self._folder,
        )
        log.close()
        assert self._process.stdin is not None
        self._process.stdin.write(config.encode())  # the password stays out of argv
        self._process.stdin.close()
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                with redis.Redis.from_url(self.url, socket_timeout=2) as client:
                    if client.ping():
                        return True
            except redis.RedisError:
                time.sleep(0.05)  # still starting; bounded by the deadline
        self.stop()
        return False

    def _log(self) -> str:
        log = self._folder / "redis.log"
        return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()
