"""Migrating a test database as `orchestrator migrate` and `participants migrate --all` do."""

from __future__ import annotations

from orchestrator.settings import Settings
from orchestrator.store import migrate
from participants import registry
from participants.kit import migrate as participant_migrate

# Migrating touches no broker; Settings only needs one named.
_NO_BROKER = "127.0.0.1:9"


def migrate_all(database_url: str) -> None:
    """The orchestrator's schema and every shipped participant's, each at its head."""
    migrate.upgrade(database_url)
    settings = Settings(database_url=database_url, kafka_bootstrap_servers=_NO_BROKER)
    for name in registry.shipped_names():
        participant_migrate.upgrade(registry.participant(name, settings), database_url)
