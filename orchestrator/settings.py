"""Settings: one frozen object read once from SAGA_* variables (and `.env` for what is unset)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic_settings import BaseSettings, SettingsConfigDict

from orchestrator import sealed, signing
from orchestrator.saga.errors import OrchestratorError


class SettingsError(OrchestratorError):
    """The configuration is not valid."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SAGA_", env_file=".env", extra="ignore", frozen=True
    )

    database_url: str = pydantic.Field(
        description="SQLAlchemy URL of PostgreSQL, e.g. postgresql+psycopg://u:p@host:5432/db"
    )
    kafka_bootstrap_servers: str = pydantic.Field(description="host:port[,host:port...]")
    topic_namespace: str = pydantic.Field(default="saga", pattern=r"^[A-Za-z0-9_-]+$")
    topic_partitions: int = pydantic.Field(default=8, ge=1, le=1024)
    topic_retention_s: int = pydantic.Field(
        default=7 * 86_400,
        ge=60,
        description="retention.ms of the command, reply, event and start topics this "
        "project creates (their dead-letter topics keep the broker's default)",
    )
    topic_replication: int = pydantic.Field(
        default=1,
        ge=1,
        le=5,
        description="replication factor of the topics this project creates; with 3 or more "
        "they get min.insync.replicas=2, so a write acknowledged (acks=all) is on two brokers",
    )
    dedup_retention_s: int = pydantic.Field(
        default=8 * 86_400,
        ge=120,
        description="how long the worker remembers a processed reply, and a participant a "
        "command's stored reply: longer than SAGA_TOPIC_RETENTION_S, so that no copy of a "
        "message can arrive after it is forgotten",
    )
    api_host: str = "127.0.0.1"
    api_port: int = pydantic.Field(default=8000, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["console", "json"] = "console"
    db_pool_size: int = pydantic.Field(default=10, ge=1, le=100)
    relay_batch_size: int = pydantic.Field(default=500, ge=1, le=10_000)
    relay_poll_interval_s: float = pydantic.Field(
        default=1.0, gt=0, le=60, description="how often the relay looks for rows left behind"
    )
    relay_recover_after_s: float = pydantic.Field(
        default=2.0,
        ge=0,
        le=600,
        description="how old an unpublished outbox row is before the relay publishes it",
    )
    relay_lease_s: float = pydantic.Field(
        default=5.0,
        ge=1,
        le=300,
        description="how long a silent relay keeps its shards of the outbox, and how often "
        "(a third of it) each relay notes itself alive",
    )
    worker_metrics_port: int = pydantic.Field(
        default=9464,
        ge=0,
        le=65535,
        description="the worker's /healthz, /readyz and /metrics port; 0: none",
    )
    consumer_session_timeout_s: float = pydantic.Field(
        default=10,
        ge=1,
        le=300,
        description="how long a silent consumer keeps its partitions: a process killed "
        "without a goodbye pauses its partitions this long (the broker refuses less than "
        "its group.min.session.timeout.ms, 6 s unless lowered)",
    )
    apply_slots: int = pydantic.Field(
        default=4,
        ge=1,
        le=32,
        description="how many transactions a consumer (the worker's replies, a participant's "
        "commands) runs at once: partitions are applied side by side, the batches of those "
        "that wait share the next free one, so one slow batch holds up this many fewer",
    )
    instance_id: str = pydantic.Field(
        default="",
        pattern=r"^[A-Za-z0-9._-]{0,100}$",
        description="a name for this process that stays the same across its restarts, and "
        "that no other running process of the same kind has (a pod of a StatefulSet, "
        "worker-1): its consumers are then static group members, and a restarted process "
        "takes its partitions back at once instead of waiting out its old session",
    )
    timer_interval_s: float = pydantic.Field(
        default=1.0,
        gt=0,
        le=60,
        description="the longest the timers sleep: how late they see a wake time set by "
        "another process",
    )
    timer_overdue_after_s: float = pydantic.Field(
        default=60,
        gt=0,
        le=86_400,
        description="a saga whose wake time passed this long ago is reported overdue "
        "(GET /sagas/stats, GET /sagas?overdue=true): no running worker has its definition",
    )
    definitions: str = pydantic.Field(
        default="", description="comma-separated modules that define more sagas"
    )
    participants: str = pydantic.Field(
        default="", description="comma-separated names of participants run elsewhere"
    )
    participant_metrics_port: int = pydantic.Field(
        default=0,
        ge=0,
        le=65535,
        description="a participant worker's /healthz, /readyz and /metrics port; 0: none",
    )
    participant_modules: str = pydantic.Field(
        default="", description="comma-separated modules that define more participants"
    )
    viewer_tokens: str = pydantic.Field(default="", description="[name:]token,...", repr=False)
    operator_tokens: str = pydantic.Field(default="", description="[name:]token,...", repr=False)
    insecure_dev: bool = pydantic.Field(
        default=False, description="serve the api without tokens (development only)"
    )
    db_lock_timeout_ms: int = pydantic.Field(
        default=5_000, ge=0, description="longest wait for a row lock (0: no limit)"
    )
    db_statement_timeout_ms: int = pydantic.Field(
        default=30_000, ge=0, description="longest statement (0: no limit)"
    )
    db_idle_in_transaction_timeout_ms: int = pydantic.Field(
        default=60_000,
        ge=0,
        description="a session idle inside a transaction this long is ended (0: no limit)",
    )
    max_body_bytes: int = pydantic.Field(default=1_048_576, ge=1024)
    max_batch_body_bytes: int = pydantic.Field(
        default=16_777_216, ge=1024, description="the body limit of POST /sagas/batch"
    )
    max_input_bytes: int = pydantic.Field(
        default=262_144,
        ge=1024,
        le=900_000,
        description="largest saga input, as JSON: its commands must fit the broker's 1 MiB",
    )
    payment_limit: str = pydantic.Field(default="10000.00", pattern=r"^[0-9]+(\.[0-9]{1,2})?$")
    data_keys: str = pydantic.Field(
        default="",
        repr=False,
        description="<key id>:<base64 of 32 bytes>,...: the AES-GCM keys of sensitive fields "
        "(the api: those of the participants it seals for; a participant: its own)",
    )
    data_key_ids: str = pydantic.Field(
        default="",
        description="<participant>=<key id>,...: the key that seals new fields for each "
        "reader; the others in SAGA_DATA_KEYS stay readable",
    )
    dev_keys: bool = pydantic.Field(
        default=False,
        description="without SAGA_DATA_KEYS, seal with the public development key, and "
        "without SAGA_SIGNING_KEYS, sign with public development keys (development only; "
        "also implied by SAGA_INSECURE_DEV)",
    )
    signing_keys: str = pydantic.Field(
        default="",
        repr=False,
        description="<key id>=<owner>:<base64 of 32 bytes>,...: the HMAC-SHA256 keys that sign "
        "and verify messages; an owner is a sender (orchestrator, payment) or a sender's key "
        "for one recipient (orchestrator>payment); a sender signs with its first key",
    )
    require_signatures: bool = pydantic.Field(
        default=True,
        description="dead-letter unsigned messages; off only while upgrading senders that do "
        "not sign yet (a wrong signature is refused either way)",
    )
    outbox_retention_s: float = pydantic.Field(
        default=3600,
        ge=0,
        le=30 * 86_400,
        description="how long a published outbox row is kept before the relay deletes it",
    )
    finished_retention_s: int = pydantic.Field(
        default=0,
        ge=0,
        description="finished sagas (completed, compensated) older than this are archived "
        "by `orchestrator archive`, or dropped by the worker with SAGA_DROP_FINISHED "
        "(0: kept for ever)",
    )
    drop_finished: bool = pydantic.Field(
        default=False,
        description="the worker deletes finished sagas past SAGA_FINISHED_RETENTION_S, with "
        "their steps and timeline, without archiving them",
    )
    housekeeping_interval_s: float = pydantic.Field(
        default=60, gt=0, le=86_400, description="how often the worker and participants purge"
    )
    session_secret: str = pydantic.Field(
        default="",
        repr=False,
        pattern=r"^(|.{16,})$",
        description="signs the dashboard's session cookies (16+ characters); unset: a "
        "random one per process, so sessions end when the api restarts",
    )
    session_ttl_s: int = pydantic.Field(
        default=28_800, ge=60, le=30 * 86_400, description="how long a dashboard login lasts"
    )
    trusted_hosts: str = pydantic.Field(
        default="",
        description="comma-separated Host names the api answers (`*.example.com` allowed, "
        "`*` for any); unset: localhost, 127.0.0.1, ::1 and SAGA_API_HOST",
    )
    metrics_cache_s: float = pydantic.Field(
        default=15, ge=0, le=3600, description="how long /metrics reuses its database gauges"
    )
    metrics_token: str = pydantic.Field(
        default="", repr=False, description="a bearer token /metrics requires; unset: none"
    )
    idempotency_ttl_s: float = pydantic.Field(
        default=86_400,
        ge=1,
        le=365 * 86_400,
        description="how long an idempotency key returns its saga; an older key starts anew",
    )

    @pydantic.field_validator("data_keys")
    @classmethod
    def _data_keys(cls, value: str) -> str:
        sealed.parse_keys(value)
        return value

    @pydantic.field_validator("signing_keys")
    @classmethod
    def _signing_keys(cls, value: str) -> str:
        signing.parse_keys(value)
        return value

    @pydantic.field_validator("data_key_ids")
    @classmethod
    def _data_key_ids(cls, value: str, info: pydantic.ValidationInfo) -> str:
        keys = info.data.get("data_keys")
        if keys is None:
            return value  # the keys are invalid: that is the error reported
        held = sealed.parse_keys(keys)
        for reader, key_id in sealed.parse_key_ids(value).items():
            if key_id not in held:
                raise ValueError(f"{reader}={key_id}: {key_id} is not in SAGA_DATA_KEYS")
        return value

    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_SSL"] = pydantic.Field(
        default="PLAINTEXT",
        description="how clients talk to Kafka: PLAINTEXT; SSL (TLS, optionally with a client "
        "certificate); SASL_SSL (TLS plus a SASL login with SAGA_KAFKA_USERNAME/PASSWORD)",
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = pydantic.Field(
        default="SCRAM-SHA-512", description="the SASL mechanism of SASL_SSL"
    )
    kafka_username: str = pydantic.Field(
        default="", description="the SASL user (the Kafka principal User:<name>) of SASL_SSL"
    )
    kafka_password: str = pydantic.Field(
        default="", description="the SASL password of SASL_SSL", repr=False, validate_default=True
    )
    kafka_ssl_cafile: str = pydantic.Field(
        default="",
        description="PEM file of the CA that signed the brokers' certificates (SSL, SASL_SSL); "
        "empty: the system's CAs",
    )
    kafka_ssl_certfile: str = pydantic.Field(
        default="", description="PEM client certificate (SSL client authentication); optional"
    )
    kafka_ssl_keyfile: str = pydantic.Field(
        default="",
        description="PEM private key of SAGA_KAFKA_SSL_CERTFILE",
        repr=False,
        validate_default=True,
    )

    @pydantic.field_validator("database_url")
    @classmethod
    def _postgres_only(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgresql+psycopg://")):
            raise ValueError("must be a postgresql:// or postgresql+psycopg:// URL")
        return value.replace("postgresql://", "postgresql+psycopg://", 1)

    @pydantic.field_validator("dedup_retention_s")
    @classmethod
    def _beyond_topic_retention(cls, value: int, info: pydantic.ValidationInfo) -> int:
        topics = info.data.get("topic_retention_s")
        if topics is not None and value <= topics:
            raise ValueError(
                f"must be longer than SAGA_TOPIC_RETENTION_S ({topics} s): a duplicate still "
                "on a topic would be applied again"
            )
        return value

    @pydantic.field_validator("timer_overdue_after_s")
    @classmethod
    def _above_timer_interval(cls, value: float, info: pydantic.ValidationInfo) -> float:
        # a saga being handled is up to one interval late: it must not be reported overdue
        interval = info.data.get("timer_interval_s")
        if interval is not None and value < 2 * interval:
            raise ValueError(f"must be at least twice SAGA_TIMER_INTERVAL_S ({interval} s)")
        return value

    @pydantic.field_validator("kafka_password")
    @classmethod
    def _sasl_login(cls, value: str, info: pydantic.ValidationInfo) -> str:
        if info.data.get("kafka_security_protocol") == "SASL_SSL" and not (
            value and info.data.get("kafka_username")
        ):
            raise ValueError("SASL_SSL needs SAGA_KAFKA_USERNAME and SAGA_KAFKA_PASSWORD")
        return value

    @pydantic.field_validator("kafka_ssl_keyfile")
    @classmethod
    def _key_with_certificate(cls, value: str, info: pydantic.ValidationInfo) -> str:
        if bool(value) != bool(info.data.get("kafka_ssl_certfile")):
            raise ValueError("SAGA_KAFKA_SSL_CERTFILE and SAGA_KAFKA_SSL_KEYFILE go together")
        return value

    @property
    def definition_modules(self) -> list[str]:
        return [m.strip() for m in self.definitions.split(",") if m.strip()]

    @property
    def participant_module_names(self) -> list[str]:
        return [m.strip() for m in self.participant_modules.split(",") if m.strip()]

    @property
    def external_participants(self) -> list[str]:
        return [p.strip() for p in self.participants.split(",") if p.strip()]

    def topic(self, channel: str) -> str:
        """The Kafka topic of a channel: a participant's commands, replies, events or the
        ingress of saga starts."""
        if channel in ("replies", "events", "starts"):
            return f"{self.topic_namespace}.{channel}"
        return f"{self.topic_namespace}.{channel}.commands"


def env_file() -> Path | None:
    """The `.env` to read: SAGA_ENV_FILE; else the nearest in the current directory or a
    parent; else the one in the project root of this checkout (where `make services` writes
    it), so that commands run from another directory find it too."""
    named = os.environ.get("SAGA_ENV_FILE")
    if named:
        return Path(named)
    here = Path.cwd().resolve()
    for directory in (here, *here.parents):
        if (directory / ".env").is_file():
            return directory / ".env"
    root = Path(__file__).resolve().parents[1]
    if (root / "pyproject.toml").is_file() and (root / ".env").is_file():
        return root / ".env"
    return None


class _WithoutDatabase(Settings):
    """For a command that never opens PostgreSQL: the URL may be unset. Its default names a
    host in the reserved .invalid domain, so a connection made by mistake fails by name."""

    database_url: str = "postgresql://no-database.invalid/unused"


def load_settings(*, database: bool = True, **given: Any) -> Settings:
    """The settings from the environment and .env; `given` (a command's options) wins over
    both and is validated the same way. `database=False` when the command never opens it."""
    kind = Settings if database else _WithoutDatabase
    try:
        return kind(_env_file=env_file(), **given)
    except pydantic.ValidationError as exc:
        lines = [
            f"  SAGA_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors(include_url=False)
        ]
        raise SettingsError(
            "invalid configuration (set it in the environment or in .env; "
            "`make services` writes one):\n" + "\n".join(lines)
        ) from None
