"""A real PostgreSQL server for the tests: Debian's ``postgresql`` package, a cluster made with
``initdb`` in a temporary directory, started with ``pg_ctl`` on a free port on 127.0.0.1, run
as the ``postgres`` user when the tests run as root (PostgreSQL refuses to run as root).

Password authentication over TCP (a random password, as a deployment would have), no fsync
(a test survives the server being stopped or killed, not the machine losing power). Each test
gets a database of its own (``fresh_database``), so suites beside each other never meet.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

import psycopg

from tests.servers.ports import ATTEMPTS, free_port

START_S = 60  # pg_ctl's own wait: a busy machine starts a cluster in seconds, not a minute


def postgres_bin() -> Path | None:
    """Where the newest installed PostgreSQL's programs are (Debian keeps them out of PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version)
    if found:
        return Path(found[-1]).parent
    program = shutil.which("pg_ctl")
    return Path(program).parent if program else None


def _version(path: str) -> int:
    part = Path(path).parts[-3]
    return int(part) if part.isdigit() else 0


class PostgresServer:
    """``with PostgresServer(bin_dir) as server``: ``url(database)``, ``stop()``, ``start()``
    (again, on the same port and data: a server that comes back), ``fresh_database()``."""

    def __init__(self, bin_dir: Path, *, durable: bool = False) -> None:
        """``durable``: fsync as a deployment would (benchmarks); tests skip it, for speed."""
        self._durable = durable
        self.bin_dir = bin_dir
        self._bin = bin_dir
        self._folder = Path(tempfile.mkdtemp(prefix="toolbroker-pg-"))
        self._data = self._folder / "data"
        self._password = secrets.token_urlsafe(18)
        self.port = 0
        self._user: int | None = None
        self._made = False
        self._count = 0

    def url(self, database: str = "postgres") -> str:
        """A connection URL with the superuser's password."""
        return f"postgresql://postgres:{self._password}@127.0.0.1:{self.port}/{database}"

    @property
    def password(self) -> str:
        """The superuser's password (a test checks it never shows)."""
        return self._password

    def start(self) -> PostgresServer:
        """Make the cluster (the first time) and start it; RuntimeError with its log if it
        cannot."""
        if not self._made:
            self._init()
        if self.port:
            if self._pg_ctl("start"):
                return self
        else:
            for _ in range(ATTEMPTS):
                self.port = free_port()
                if self._pg_ctl("start"):
                    return self
        raise RuntimeError("PostgreSQL did not start: " + self._log())

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: rolls back open transactions and disconnects clients;
        ``immediate``: as if it crashed); its data stays."""
        self._pg_ctl("stop", "-m", mode)

    def fresh_database(self) -> str:
        """A new, empty database; its URL."""
        self._count += 1
        name = f"tb_{os.getpid()}_{self._count}_{secrets.token_hex(3)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Remove a database made by ``fresh_database`` (disconnecting whoever is left)."""
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def remove(self) -> None:
        """Stop the server and remove its cluster."""
        if self._made:
            self._pg_ctl("stop", "-m", "immediate")
        shutil.rmtree(self._folder, ignore_errors=True)

    def _init(self) -> None:
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root: as its own user
            owner = pwd.getpwnam("postgres")
            os.chown(self._folder, owner.pw_uid, owner.pw_gid)
            self._user = owner.pw_uid
        password_file = self._folder / "password"
        password_file.write_text(self._password)
        if self._user is not None:
            os.chown(password_file, self._user, -1)
        password_file.chmod(0o600)
        done = self._run(
            [
                str(self._bin / "initdb"),
                "-D",
                str(self._data),
                "-U",
                "postgres",
                f"--pwfile={password_file}",
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C",
            ]
        )
        password_file.unlink()
        if done.returncode != 0:
            raise RuntimeError("initdb failed: " + done.stdout)
        self._made = True

    def _pg_ctl(self, action: str, *more: str) -> bool:
        unsafe = "" if self._durable else "-c fsync=off -c full_page_writes=off "
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self._folder} {unsafe}"
            "-c max_connections=200"
        )
        command = [str(self._bin / "pg_ctl"), action, "-D", str(self._data), *more]
        if action == "start":
            command += ["-w", "-t", str(START_S), "-l", str(self._folder / "log"), "-o", options]
        return self._run(command).returncode == 0

    def _run(self, command: list[str]) -> subprocess.CompletedProcess[str]:
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "HOME": str(self._folder)}
        return subprocess.run(
            command,
            user=self._user,
            env=env,
            cwd=self._folder,
            capture_output=True,
            text=True,
            timeout=START_S + 30,
            check=False,
        )

    def _log(self) -> str:
        log = self._folder / "log"
        return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()
