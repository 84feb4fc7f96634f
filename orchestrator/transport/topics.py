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


def topic_configs(settings: Settings, dead_letters: bool = False) -> dict[str, str]:
    """The configs of a new topic: its retention (dead-letter topics keep the broker's), and
    with three replicas or more min.insync.replicas=2, so that a write the producers (acks=all)
    see acknowledged is on two brokers, and one broker down stops nothing."""
    configs = {} if dead_letters else {"retention.ms": str(settings.topic_retention_s * 1000)}
    if settings.topic_replication >= 3:
        configs["min.insync.replicas"] = "2"
    return configs


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
            new = [
                NewTopic(
                    t,
                    settings.topic_partitions,
                    settings.topic_replication,
                    topic_configs=topic_configs(settings, dead_letters=t.endswith(DLQ_SUFFIX)),
                )
                for t in missing
            ]
            response = await admin.create_topics(new)
            for topic, code, *_ in response.topic_errors:
                if code not in (0, 36):  # 36: TOPIC_ALREADY_EXISTS, another process won
                    raise RuntimeError(f"could not create topic {topic}: error code {code}")
            log.info(
                "topics_created",
                topics=missing,
                partitions=settings.topic_partitions,
                replication=settings.topic_replication,
            )
        return missing
    finally:
        await admin.close()
