"""Runs one participant: its consumer on its command topic, its replies, and with a port its
/healthz, /readyz and /metrics, in one process."""

from __future__ import annotations

import asyncio
from functools import partial

from orchestrator import signing
from orchestrator.group_commit import Merging
from orchestrator.housekeeping import Housekeeping, Purge
from orchestrator.settings import Settings, SettingsError
from orchestrator.store.unit_of_work import engine_for
from orchestrator.transport import consumer, faust_app, topics
from orchestrator.transport.loop import consuming
from orchestrator.transport.producer import Publisher
from orchestrator.transport.security import kafka_security
from participants.kit import migrate
from participants.kit.participant import CommandProcessor, Participant


def serve(participant: Participant, settings: Settings, web_port: int = 0) -> None:
    """Consume the participant's commands until stopped (SIGTERM, SIGINT)."""
    name = participant.name
    asyncio.run(topics.ensure_topics(settings, [name]))
    engine = engine_for(settings, 4, pre_ping=False)
    publisher = Publisher(
        settings.kafka_bootstrap_servers,
        f"saga-participant-{name}",
        security=kafka_security(settings),
    )
    keys = signing.message_keys(settings)
    orchestrator = [signing.scoped(signing.ORCHESTRATOR, name), signing.ORCHESTRATOR]
    if keys.signing_key(name) is None or not keys.holds_any(orchestrator):
        raise SettingsError(
            f"SAGA_SIGNING_KEYS must hold a key of {name}, to sign its replies, and one of "
            f"{' or '.join(orchestrator)}, to verify its commands (or set SAGA_DEV_KEYS=1 in "
            "development)"
        )
    processor = CommandProcessor(
        participant, engine, publisher, settings.topic("replies"), keys.signer(name)
    )

    authentic = signing.commands_for(keys, name)
    process_many = Merging(processor.process_many, settings.apply_slots)
    apply_commands = consumer.applying(process_many, publisher, verify=authentic)
    commands = consuming(settings, f"participant-{name}", name, apply_commands)

    purge = partial(processor.purge_inbox, settings.dedup_retention_s)
    housekeeping = Housekeeping([Purge("inbox", purge)], settings.housekeeping_interval_s)

    async def keep_house() -> None:
        await housekeeping.run()

    async def close() -> None:
        await publisher.stop()
        await engine.dispose()

    async def schema_at_head() -> None:
        await migrate.check_at_head(participant, engine)

    faust_app.serve(
        settings,
        f"{settings.topic_namespace}-participant-{name}",
        [commands],
        close,
        web_port=web_port,
        ready_checks=[schema_at_head],
        tasks=[keep_house],
    )
