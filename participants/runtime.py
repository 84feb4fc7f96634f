"""Runs one participant as a faust-streaming worker on its command topic."""

from __future__ import annotations

import asyncio

from orchestrator.settings import Settings
from orchestrator.store.unit_of_work import engine_for
from orchestrator.transport import consumer, faust_app, topics
from orchestrator.transport.loop import consuming
from orchestrator.transport.producer import Publisher
from participants import registry
from participants.kit.participant import CommandProcessor


def run_worker(settings: Settings, name: str) -> None:
    participant = registry.participant(name, settings)
    asyncio.run(topics.ensure_topics(settings, [name]))
    engine = engine_for(settings, 4, pre_ping=False)
    publisher = Publisher(settings.kafka_bootstrap_servers, f"saga-participant-{name}")
    processor = CommandProcessor(participant, engine, publisher, settings.topic("replies"))

    apply_commands = consumer.applying(processor.process_many, publisher)
    commands = consuming(settings, f"participant-{name}", name, apply_commands)

    async def close() -> None:
        await publisher.stop()
        await engine.dispose()

    faust_app.serve(settings, f"{settings.topic_namespace}-participant-{name}", [commands], close)
