"""A real MinIO server for a test: a free port on 127.0.0.1, a temporary data directory,
random root credentials, run as ``nobody`` when the tests run as root (the binary comes from a
third-party package: tests/servers/fetch_minio.py)."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from tests.servers.ports import ATTEMPTS, free_port

START_S = 30.0


def minio_program() -> str | None:
    """The MinIO server program: the one ``make test`` put beside the virtualenv's Python,
    else one on PATH."""
    candidate = Path(sys.prefix) / "bin" / "minio"
    return str(candidate) if candidate.exists() else shutil.which("minio")


class MinioServer:
    """``with MinioServer(program) as server``: ``endpoint``, ``access_key``, ``secret_key``."""

    def __init__(self, program: str) -> None:
        self._program = program
        self._folder = Path(tempfile.mkdtemp(prefix="toolbroker-minio-"))
        self.access_key = "tb" + secrets.token_hex(6)
        self.secret_key = secrets.token_hex(16)
        self.endpoint = ""
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> MinioServer:
        """Start it and wait until it answers its health check; RuntimeError if it cannot."""
        data = self._folder / "data"
        data.mkdir()
        user, program = None, self._program
        if os.geteuid() == 0:  # not as root: a program from a third-party package
            nobody = pwd.getpwnam("nobody")
            # a copy nobody can run (the checkout may sit in a folder only root can enter)
            program = str(shutil.copy(self._program, self._folder / "minio"))
            for path in (self._folder, data):
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
            user = nobody.pw_uid
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self._folder),
            "MINIO_ROOT_USER": self.access_key,
            "MINIO_ROOT_PASSWORD": self.secret_key,
            "MINIO_BROWSER": "off",
        }
        for _ in range(ATTEMPTS):
            port = free_port()
            self.endpoint = f"http://127.0.0.1:{port}"
            log = (self._folder / "minio.log").open("wb")
            self._process = subprocess.Popen(
                [program, "server", str(data), "--address", f"127.0.0.1:{port}", "--quiet"],
                env=env,
                user=user,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            log.close()
            if self._wait_healthy():
                return self
            self._stop_process()
        raise RuntimeError("MinIO did not start: " + (self._folder / "minio.log").read_text())

    def _wait_healthy(self) -> bool:
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                return False
            try:
                url = self.endpoint + "/minio/health/live"
                with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 (loopback)
                    if answer.status == 200:
                        return True
            except OSError:
                time.sleep(0.1)  # still starting; bounded by the deadline
        return False

    def _stop_process(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
        self._process = None

    def stop(self) -> None:
        """Stop it and remove its data."""
        self._stop_process()
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> MinioServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
