"""Creates the project's topics: the broker does not create topics on its own."""

from __future__ import annotations

from collections.abc import Iterable

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from orchestrator.settings import Settings
from orchestrator.transport.security import kafka_security

log = structlog.get_logger(__name__)

DLQ_SUFFIX = ".dlq"


def topic_names(settings: Settings, participants: Iterable[str]) -> list[str]:
    base = [settings.topic("replies"), settings.topic("events"), settings.topic("starts")]
    base += [settings.topic(p) for p in participants]
    return base + [t + DLQ_SUFFIX for t in base]


async def ensure_topics(settings: Settings, participants: Iterable[str]) -> list[str]:
    """Create the topics that are missing; return the names created."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers.split(","),
        client_id="saga-admin",
        **kafka_security(settings),
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topic_names(settings, participants) if t not in existing]
        if missing:
            retention = {"retention.ms": str(settings.topic_retention_s * 1000)}
            new = [
                NewTopic(
                    t,
                    settings.topic_partitions,
                    1,
                    topic_configs={} if t.endswith(DLQ_SUFFIX) else retention,
                )
                for t in missing
            ]
            response = await admin.create_topics(new)
            for topic, code, *_ in response.topic_errors:
                if code not in (0, 36):  # 36: TOPIC_ALREADY_EXISTS, another process won
                    raise RuntimeError(f"could not create topic {topic}: error code {code}")
            log.info("topics_created", topics=missing, partitions=settings.topic_partitions)
        return missing
    finally:
        await admin.close()
