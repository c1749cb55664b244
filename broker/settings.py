"""The broker's own config file (``examples/broker.yaml``) as a frozen, strict pydantic model."""

from __future__ import annotations

import base64
import binascii
import importlib.util
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from broker.units import Duration
from broker.untrusted.detectors import load_detector
from broker.yamlfile import load_model

MAX_REQUEST_WINDOW = 300.0


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"'{value}' is not host:port; write for example 127.0.0.1:50051")
    return value


HostPort = Annotated[str, AfterValidator(_host_port)]


class AdminKey(BaseModel):
    """An operator's public key for the admin service."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_.-]{0,62}$", description="Who, in the audit.")
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
    ed25519: str = Field(description="Base64 of the 32-byte public key (broker keygen).")

    @field_validator("ed25519")
    @classmethod
    def _public_key(cls, value: str) -> str:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise ValueError(
                "not an Ed25519 public key: write the base64 of its 32 bytes, as broker keygen "
                "prints it"
            )
        return value


class SlackSettings(BaseModel):
    """Where approval questions go. The token and signing secret are secrets in the store."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_url: str = Field("https://slack.com/api/", description="Slack Web API base URL.")
    channel: str = Field(min_length=1, description="Default channel id for approvals.")
    bot_token_secret: str = Field("slack-bot-token", description="Secret holding the bot token.")
    signing_secret_secret: str = Field(
        "slack-signing-secret", description="Secret holding the app's signing secret."
    )
    socket_mode: bool = Field(
        False,
        description="Receive clicks over a websocket the broker opens (no inbound HTTP needed).",
    )
    app_token_secret: str = Field(
        "slack-app-token", description="Secret holding the app-level token (Socket Mode)."
    )

    @field_validator("api_url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("api_url must be an http(s) URL")
        return value if value.endswith("/") else value + "/"


class WitnessSettings(BaseModel):
    """A place outside the machine that keeps every signed audit checkpoint (docs/audit.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["http", "s3", "syslog"] = Field(description="http, s3 or syslog.")
    url: str | None = Field(None, description="http: where each checkpoint is POSTed.")
    token_env: str | None = Field(
        None, description="http: environment variable holding a bearer token to send."
    )
    bucket: str | None = Field(None, description="s3: the bucket.")
    prefix: str = Field("toolbroker/", description="s3: key prefix (the broker id follows).")
    endpoint_url: str | None = Field(None, description="s3: a non-AWS endpoint (MinIO, ...).")
    region: str | None = Field(None, description="s3: the region (default us-east-1).")
    lock_days: int = Field(
        0, ge=0, description="s3: keep each object under object lock this many days (0: off)."
    )
    lock_mode: Literal["COMPLIANCE", "GOVERNANCE"] = Field(
        "COMPLIANCE", description="s3: the object lock mode."
    )
    address: str = Field("/dev/log", description="syslog: a local socket path, or host:port (UDP).")
    facility: Literal["auth", "authpriv", "daemon", "user", "local0", "local7"] = Field(
        "auth", description="syslog: the facility."
    )

    @model_validator(mode="after")
    def _complete(self) -> WitnessSettings:
        if self.kind == "http" and not (self.url or "").startswith(("http://", "https://")):
            raise ValueError("an http witness needs url: an http(s) URL")
        if self.kind == "s3" and not self.bucket:
            raise ValueError("an s3 witness needs bucket")
        if self.kind == "s3" and importlib.util.find_spec("boto3") is None:
            raise ValueError("an s3 witness needs boto3: pip install 'toolbroker[s3]'")
        return self


class ConsoleOperator(BaseModel):
    """A person who may sign in to the web console (docs/console.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(
        pattern=r"^[a-z][a-z0-9_.-]{0,62}$", description="Who, in the console and the audit."
    )
    approver_ids: list[str] = Field(
        default_factory=list,
        description="The ids this person has in policies' approvers besides their name (their "
        "Slack user id, say); a call is theirs to decide when its policy names one.",
    )
    admin: bool = Field(
        False, description="May freeze and unfreeze any agent and reconcile lost outcomes."
    )
    oidc_subject: str | None = Field(
        None, description="The value of console.oidc.claim that signs this person in (OIDC)."
    )


class OidcSettings(BaseModel):
    """Sign-in through an OpenID Connect provider (the production path)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    issuer: str = Field(description="The provider's issuer URL (its discovery document).")
    client_id: str = Field(min_length=1, description="The console's client id there.")
    client_secret_env: str = Field(
        min_length=1, description="The environment variable holding the client secret."
    )
    claim: str = Field(
        "email", description="The ID token claim matched against operators' oidc_subject."
    )

    @field_validator("issuer")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("issuer must be an https URL")
        return value.rstrip("/")


class ConsoleSettings(BaseModel):
    """The web console for approvers and operators, on the HTTP side (docs/console.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    operators: list[ConsoleOperator] = Field(
        min_length=1, description="Who may sign in; nobody else can."
    )
    public_url: str | None = Field(
        None,
        description="The console's address as people open it (default http://<http_listen>); "
        "https makes its cookies Secure, and is required off loopback.",
    )
    session_ttl: Duration = Field(8 * 3600.0, description="A sign-in lasts this long.")
    link_ttl: Duration = Field(
        600.0, description="A one-time sign-in link (broker console login) works this long."
    )
    session_key_file: Path | None = Field(
        None,
        description="The key that signs sessions and links (default data_dir/console.key, "
        "made if missing); the same file for every replica.",
    )
    oidc: OidcSettings | None = Field(None, description="OpenID Connect sign-in.")

    @field_validator("public_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("public_url must be an http(s) URL")
        return value.rstrip("/") if value is not None else None

    @model_validator(mode="after")
    def _unique(self) -> ConsoleSettings:
        names = [operator.name for operator in self.operators]
        if len(names) != len(set(names)):
            raise ValueError("operators' names must be unique")
        return self


class BrokerSettings(BaseModel):
    """What one broker process needs to start. Relative paths resolve against the file's folder."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    broker_id: str = Field(min_length=1, description="The audience agents sign for.")
    listen: HostPort = Field("127.0.0.1:50051", description="gRPC address: ToolBroker, health.")
    http_listen: HostPort | None = Field(
        None,
        description="HTTP side: /healthz, /metrics and Slack's /slack/interactions (off if unset).",
    )
    data_dir: Path = Field(description="SQLite file and the broker's own keys; made if missing.")
    policies: Path = Field(description="Folder of policy files, one per agent.")
    tools: Path = Field(description="Folder of tool manifests, one per upstream system.")
    request_window: Duration = Field(
        30.0, description="How far issued_at may lie from the broker's clock (at most 300s)."
    )
    dev_keys: bool = Field(
        False,
        description="Development only: make a key pair per agent in data_dir/dev-keys and trust "
        "it. Never in production.",
    )
    durability: Literal["fsync", "process"] = Field(
        "fsync",
        description="fsync: every audit row is on disk before its answer leaves (group commit). "
        "process: rows survive the broker being killed but not a power loss; faster.",
    )
    master_key_file: Path | None = Field(
        None,
        description="File holding the master key (base64 of 32 bytes, mode 0600). The "
        "BROKER_MASTER_KEY environment variable wins over it. Without either the broker is "
        "sealed: calls that need a credential fail with SEALED.",
    )
    audit_key_file: Path | None = Field(
        None,
        description="The Ed25519 key that signs audit checkpoints (default data_dir/audit.key, "
        "made if missing). Replicas share one chain: give every replica the same file.",
    )
    admin_key_file: Path | None = Field(
        None,
        description="The local admin key the command line signs with (default "
        "data_dir/admin.key, made if missing); the same file for every replica.",
    )
    slack: SlackSettings | None = Field(
        None, description="Approvals in Slack; without it operators decide with the CLI."
    )
    admin_keys: list[AdminKey] = Field(
        default_factory=list,
        description="Operators' public keys for the admin service, besides the broker's local "
        "admin key (data_dir/admin.key).",
    )
    await_max_wait: Duration = Field(60.0, description="The longest one Await call waits.")
    audit_checkpoint_interval: Duration = Field(
        60.0,
        description="Sign a checkpoint of the audit chain at least this often (and every "
        "1,000 records) while records come in.",
    )
    audit_witnesses: list[WitnessSettings] = Field(
        default_factory=list,
        description="Where every signed audit checkpoint is also kept, outside the machine: "
        "http, s3, syslog. Calls never wait for them.",
    )
    approval_timer_interval: Duration = Field(
        1.0, description="How often pending calls are checked for reminders and expiry."
    )
    bwrap: str = Field("bwrap", description="The bubblewrap program that sandboxes command tools.")
    detector: str = Field(
        "features",
        description="What looks for injected instructions in untrusted output: features (the "
        "built-in detector), none, or package.module:Name for one installed beside the broker.",
    )
    calls_retention: Duration = Field(
        30 * 86400.0,
        description="Calls in a final state are kept this long after their last change: a "
        "write retried with its idempotency key within it gets its first answer, after it "
        "runs anew. Pending calls and unreconciled lost outcomes are always kept.",
    )
    taint_retention: Duration = Field(
        7 * 86400.0,
        description="Values and text from outside are kept this long (at least the longest "
        "taint_window of a policy); a write after that is not checked against them.",
    )
    budget_retention: Duration = Field(
        7 * 86400.0,
        description="Budget use of past days, and of tasks idle this long, is dropped (an "
        "idle task's budget then starts again).",
    )
    retention_interval: Duration = Field(
        3600.0, gt=0, description="How often what is past its retention is dropped."
    )
    reload_interval: Duration = Field(
        2.0,
        description="How often to look for changed policy and tool files (0s: only on SIGHUP). "
        "A changed set that fails its checks is refused; the old one stays in force.",
    )
    database_url: str | None = Field(
        None,
        description="PostgreSQL for the state replicas share (postgresql://user@host/db); "
        "without it, SQLite in data_dir. Keep a password out of this file: database_url_env.",
    )
    database_url_env: str | None = Field(
        None, description="An environment variable holding database_url (with its password)."
    )
    redis_url: str | None = Field(
        None,
        description="Redis for the rate limits, upstream rests and loop windows replicas "
        "share (redis://host:port/0); without it, each process keeps its own. Keep a "
        "password out of this file: redis_url_env.",
    )
    redis_url_env: str | None = Field(
        None, description="An environment variable holding redis_url (with its password)."
    )
    replica_count: int = Field(
        1,
        ge=1,
        le=1000,
        description="How many replicas share the limits: while Redis is down each allows "
        "reads at limit / replica_count, and refuses rate-limited writes.",
    )
    so_reuseport: bool = Field(
        False, description="Let several broker processes share one port, on purpose."
    )
    console: ConsoleSettings | None = Field(
        None, description="The web console on the HTTP side (off unless set; docs/console.md)."
    )

    @model_validator(mode="after")
    def _slack_needs_http(self) -> BrokerSettings:
        if self.slack is not None and not self.slack.socket_mode and self.http_listen is None:
            raise ValueError(
                "slack needs http_listen (Slack sends button clicks to it) or socket_mode: true"
            )
        return self

    @model_validator(mode="after")
    def _console_on_loopback(self) -> BrokerSettings:
        if self.console is None:
            return self
        if self.http_listen is None:
            raise ValueError("console needs http_listen (write for example 127.0.0.1:8080)")
        host = self.http_listen.rpartition(":")[0].strip("[]")
        public = self.console.public_url or ""
        if host not in ("127.0.0.1", "::1", "localhost") and not public.startswith("https://"):
            raise ValueError(
                "the console off loopback needs console.public_url with https:// (a TLS proxy "
                "in front), so that its cookies never travel in clear"
            )
        return self

    @model_validator(mode="after")
    def _one_database_url(self) -> BrokerSettings:
        if self.database_url is not None and self.database_url_env is not None:
            raise ValueError("set database_url or database_url_env, not both")
        if self.redis_url is not None and self.redis_url_env is not None:
            raise ValueError("set redis_url or redis_url_env, not both")
        return self

    @field_validator("redis_url")
    @classmethod
    def _redis_only(cls, value: str | None) -> str | None:
        # the message never repeats the value: it may hold a password
        if value is not None and not re.match(r"(rediss?|unix)://", value):
            raise ValueError("redis_url must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, value: str | None) -> str | None:
        # the message never repeats the value: it may hold a password
        if value is not None and not re.match(r"postgres(ql)?://", value):
            raise ValueError("database_url must be a postgresql:// URL")
        return value

    @field_validator("detector")
    @classmethod
    def _detector_loads(cls, value: str) -> str:
        load_detector(value)  # DetectorError (a ValueError) says what was wrong
        return value

    @field_validator("reload_interval")
    @classmethod
    def _not_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError("reload_interval cannot be negative; 0s turns file watching off")
        return value

    @field_validator("request_window")
    @classmethod
    def _window_capped(cls, value: float) -> float:
        if not 0 < value <= MAX_REQUEST_WINDOW:
            raise ValueError("request_window must be more than 0s and at most 300s")
        return value

    @field_validator("calls_retention", "taint_retention", "budget_retention")
    @classmethod
    def _keeps_a_day(cls, value: float) -> float:
        # a day at least: less would forget an idempotency key or a budget mid-use
        if value < 86400:
            raise ValueError("a retention must be at least 1d")
        return value

    @property
    def console_url(self) -> str:
        """Where people open the console: public_url, else http://<http_listen>."""
        public = self.console.public_url if self.console else None
        return public or f"http://{self.http_listen}"

    @property
    def database(self) -> Path:
        """The embedded SQLite file."""
        return self.data_dir / "broker.db"


def load_settings(path: Path) -> BrokerSettings:
    """Read a config file; relative paths in it are taken from the file's own folder."""
    settings = load_model(path, BrokerSettings)
    base = path.resolve().parent

    def under_base(value: Path | None) -> Path | None:
        return (base / value).resolve() if value is not None else None

    return settings.model_copy(
        update={
            "data_dir": (base / settings.data_dir).resolve(),
            "policies": (base / settings.policies).resolve(),
            "tools": (base / settings.tools).resolve(),
            "master_key_file": under_base(settings.master_key_file),
            "audit_key_file": under_base(settings.audit_key_file),
            "admin_key_file": under_base(settings.admin_key_file),
            "console": settings.console
            and settings.console.model_copy(
                update={"session_key_file": under_base(settings.console.session_key_file)}
            ),
        }
    )
