"""The orchestrator's tables, on one MetaData with named constraints."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from orchestrator.saga.machine import SagaStatus

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

_now = sa.text("now()")

saga = sa.Table(
    "saga",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=False), primary_key=True),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("definition_version", sa.Integer, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("input", pg.JSONB, nullable=False),
    sa.Column("context", pg.JSONB, nullable=False),
    sa.Column("idempotency_key", sa.Text, nullable=True, unique=True),
    sa.Column("request_hash", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("wake_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("trace_id", sa.String(32), nullable=True),
    # Set when the saga needs an operator (it could not be decided, or a message of it could
    # not be published); its timers stop until an operator retries it.
    sa.Column("parked_reason", sa.Text, nullable=True),
    sa.Column("parked_at", sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint(
        f"status IN ({', '.join(repr(s.value) for s in SagaStatus)})", name="status_known"
    ),
    sa.Index(None, "status", "updated_at"),
    sa.Index(None, "created_at", "id"),
    sa.Index(None, "status", "created_at", "id"),
    sa.Index(None, "type", "created_at", "id"),
    sa.Index("ix_saga_wake_at", "wake_at", postgresql_where=sa.text("wake_at IS NOT NULL")),
    sa.Index("ix_saga_parked_at", "parked_at", postgresql_where=sa.text("parked_at IS NOT NULL")),
)

saga_step = sa.Table(
    "saga_step",
    metadata,
    sa.Column(
        "saga_id",
        pg.UUID(as_uuid=False),
        sa.ForeignKey("saga.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("compensation_attempt", sa.Integer, nullable=False),
    sa.Column("resolve_attempt", sa.Integer, nullable=False, server_default=sa.text("0")),
    # the message id of the command last sent for the step: the one reply that counts answers it
    sa.Column("command_id", pg.UUID(as_uuid=False), nullable=True),
    # Attempts before these were spent before an operator's retry: the budget counts from here.
    sa.Column("retry_base", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("compensation_base", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("result", pg.JSONB, nullable=True),
    sa.Column("error", pg.JSONB, nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.Index(
        "ix_saga_step_resolving", "saga_id", postgresql_where=sa.text("status = 'resolving'")
    ),
)

saga_timeline = sa.Table(
    "saga_timeline",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    sa.Column(
        "saga_id",
        pg.UUID(as_uuid=False),
        sa.ForeignKey("saga.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("step", sa.Text, nullable=True),
    sa.Column("detail", pg.JSONB, nullable=False),
    sa.Column("message_id", pg.UUID(as_uuid=False), nullable=True),
    sa.Index(None, "saga_id", "id"),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    sa.Column("topic", sa.Text, nullable=False),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("headers", pg.JSONB, nullable=False),
    sa.Column("value", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("parked_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index(
        "ix_outbox_unpublished",
        "id",
        postgresql_where=sa.text("published_at IS NULL AND parked_at IS NULL"),
    ),
    sa.Index("ix_outbox_parked", "id", postgresql_where=sa.text("parked_at IS NOT NULL")),
)

# Who relays each shard of the outbox now: a row per shard (id: the shard), taken by a
# conditional UPDATE and held by renewing it, so that no lock or transaction stays open
# while a relay waits on the broker.
outbox_relay_lease = sa.Table(
    "outbox_relay_lease",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("owner", sa.Text, nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)

# The relays alive: each notes itself every few seconds, and they share the shards among
# those seen lately.
outbox_relay_member = sa.Table(
    "outbox_relay_member",
    metadata,
    sa.Column("owner", sa.Text, primary_key=True),
    sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
)

processed_message = sa.Table(
    "processed_message",
    metadata,
    sa.Column("message_id", pg.UUID(as_uuid=False), primary_key=True),
    sa.Column("saga_id", pg.UUID(as_uuid=False), nullable=False),
    sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.Index("ix_processed_message_processed_at", "processed_at", postgresql_using="brin"),
)
