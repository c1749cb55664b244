"""Witnesses: places outside the machine that keep every signed checkpoint of the audit chain,
so that whoever can write the data directory cannot cut or replace the trail unseen.

A witness takes a checkpoint (``post``) and, where it can, gives back the ones it holds
(``read``, for ``broker audit verify``). Each kind is a small class:

- ``http``: POST of the checkpoint as JSON to a URL (2xx: held); a GET of the same URL
  answers the checkpoints held (a JSON list, or one per line). docs/audit.md has the contract.
- ``s3``: one object per checkpoint in an S3-compatible bucket (``broker.audit.s3_witness``,
  loaded only when configured: boto3 is heavy to import).
- ``syslog``: one line per checkpoint to a syslog socket (``/dev/log``, journald's too) or a
  UDP address. It cannot be read back: pass the log file to verify with ``--witness FILE``.
- ``file`` (verify only): a file holding checkpoints as JSON, one per line or among other
  lines (a log, a syslog or journal export, or what ``broker audit checkpoint`` printed).

The writer posts from threads of its own (``broker.audit.witness_posting``): a slow or dead
witness never holds a call.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from broker.audit.checkpoints import Checkpoint

HTTP_TIMEOUT_S = 10.0
MAX_READ_BYTES = 64 * 1024 * 1024  # what verify reads from one witness at most
SYSLOG_PORT = 514
_FACILITIES = {"auth": 4, "authpriv": 10, "daemon": 3, "user": 1, "local0": 16, "local7": 23}
NOTICE = 5


class WitnessError(Exception):
    """A witness did not take a checkpoint, or could not be read (the message says why)."""


class Witness(Protocol):
    """A place outside the machine that keeps checkpoints."""

    name: str

    def post(self, mark: Checkpoint) -> None:
        """Hand the witness one checkpoint; WitnessError if it did not take it."""

    def read(self) -> list[Checkpoint]:
        """The checkpoints it holds; WitnessError if it cannot say."""


class HttpWitness:
    """POSTs each checkpoint to ``url``; a GET of ``url`` lists what it holds. With
    ``token_env``, the environment variable of that name is sent as a bearer token."""

    def __init__(self, url: str, token_env: str | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"an http witness needs an http(s) URL, not {url!r}")
        self.url = url
        self.name = url
        self._token_env = token_env

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._token_env:
            token = os.environ.get(self._token_env)
            if not token:
                raise WitnessError(f"the environment variable {self._token_env} is not set")
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def post(self, mark: Checkpoint) -> None:
        body = mark.line().encode()
        request = urllib.request.Request(  # noqa: S310 (http(s) only, checked above)
            self.url, data=body, headers=self._headers(), method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as answer:  # noqa: S310
                answer.read(4096)
        except urllib.error.HTTPError as exc:
            raise WitnessError(f"{self.url} answered {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise WitnessError(f"{self.url}: {_reason(exc)}") from None

    def read(self) -> list[Checkpoint]:
        request = urllib.request.Request(self.url, headers=self._headers())  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as answer:  # noqa: S310
                text = answer.read(MAX_READ_BYTES).decode("utf-8", errors="replace")
        except urllib.error.HTTPError as exc:
            raise WitnessError(f"{self.url} answered {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise WitnessError(f"{self.url}: {_reason(exc)}") from None
        return parse_checkpoints(text)


class SyslogWitness:
    """Sends each checkpoint as one syslog line (``toolbroker-audit: {...}``) to a local
    socket (``/dev/log``) or to ``host:port`` over UDP."""

    def __init__(self, address: str, facility: str = "auth") -> None:
        if facility not in _FACILITIES:
            raise ValueError(f"syslog facility {facility!r}: one of {', '.join(_FACILITIES)}")
        self.name = f"syslog {address}"
        self._priority = _FACILITIES[facility] * 8 + NOTICE
        self._unix = address.startswith("/")
        if self._unix:
            self._target: str | tuple[str, int] = address
        else:
            host, _, port = address.rpartition(":")
            self._target = (host or address, int(port) if host else SYSLOG_PORT)

    def post(self, mark: Checkpoint) -> None:
        message = f"<{self._priority}>toolbroker-audit[{os.getpid()}]: {mark.line()}".encode()
        family = socket.AF_UNIX if self._unix else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.sendto(message, self._target)
        except OSError as exc:
            raise WitnessError(f"{self.name}: {exc.strerror or exc}") from None

    def read(self) -> list[Checkpoint]:
        raise WitnessError(
            f"{self.name} cannot be read back: pass its log to verify with --witness FILE"
        )


class FileWitness:
    """Checkpoints kept in a file (read only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)

    def post(self, mark: Checkpoint) -> None:
        raise WitnessError(f"{self.name} is read only")

    def read(self) -> list[Checkpoint]:
        try:
            with self.path.open(encoding="utf-8", errors="replace") as source:
                text = source.read(MAX_READ_BYTES)
        except OSError as exc:
            raise WitnessError(f"cannot read {self.path}: {exc.strerror}") from None
        return parse_checkpoints(text)


def parse_checkpoints(text: str) -> list[Checkpoint]:
    """Every checkpoint in ``text``: a JSON list or object of them, or lines that hold one
    each after any prefix (a log's time, syslog's tag). Other lines are skipped."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            return _checkpoints(json.loads(stripped))
        except ValueError:
            pass  # not one JSON document: line by line
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except ValueError:
            pass
        else:
            return _checkpoints(data.get("checkpoints", [data]))
    found = []
    for line in text.splitlines():
        start = line.find("{")
        if start < 0 or "head_hash" not in line:
            continue
        try:
            found.append(Checkpoint.from_json(json.loads(line[start:])))
        except ValueError:
            continue  # a line that only mentions a head
    return found


def _checkpoints(items: Iterable[Any]) -> list[Checkpoint]:
    marks = []
    for item in items:
        try:
            marks.append(Checkpoint.from_json(item))
        except ValueError as exc:
            raise WitnessError(f"not a list of checkpoints: {exc}") from None
    return marks


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    return str(getattr(reason, "strerror", None) or reason)


def witness_from(config: dict[str, Any], broker_id: str) -> Witness:
    """A witness from its settings (``audit_witnesses`` in broker.yaml)."""
    kind = config.get("kind")
    if kind == "http":
        return HttpWitness(str(config["url"]), config.get("token_env"))
    if kind == "syslog":
        address = str(config.get("address") or "/dev/log")
        return SyslogWitness(address, str(config.get("facility") or "auth"))
    if kind == "s3":
        # boto3 takes ~0.5 s to import: only a broker that keeps checkpoints in S3 pays it
        try:
            module = importlib.import_module("broker.audit.s3_witness")
        except ImportError:
            raise ValueError("an s3 witness needs boto3: pip install 'toolbroker[s3]'") from None
        witness: Witness = module.S3Witness(config, broker_id)
        return witness
    raise ValueError(f"unknown witness kind {kind!r}: http, s3 or syslog")
