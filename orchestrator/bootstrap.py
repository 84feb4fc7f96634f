"""The composition root: the only place engines, producers and services are built."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

import structlog
import uvicorn

from orchestrator import group_commit, sagas, scheduler, sealed, signing
from orchestrator.api import guards
from orchestrator.api.app import create_app
from orchestrator.api.auth import Authenticator
from orchestrator.housekeeping import Housekeeping, Purge
from orchestrator.saga.definition import DefinitionRegistry
from orchestrator.saga.messages import Message
from orchestrator.service import SagaService
from orchestrator.settings import Settings, SettingsError
from orchestrator.store import migrate
from orchestrator.store.outbox import SqlOutbox
from orchestrator.store.queries import SqlSagaReader
from orchestrator.store.retention import SqlRetention
from orchestrator.store.unit_of_work import SqlUnitOfWork, engine_for
from orchestrator.transport import consumer, faust_app, ingress, topics
from orchestrator.transport.loop import consuming
from orchestrator.transport.producer import Publisher
from orchestrator.transport.publish_on_commit import PublishOnCommit
from orchestrator.transport.relay import OutboxRelay
from orchestrator.transport.security import kafka_security

log = structlog.get_logger(__name__)


def build_registry(settings: Settings) -> DefinitionRegistry:
    """Every saga definition this deployment runs, checked against the participants known:
    those shipped in `participants/`, installed under the entry-point group or named in
    SAGA_PARTICIPANT_MODULES, and those named in SAGA_PARTICIPANTS (run elsewhere)."""
    from participants import registry as participant_registry

    known = [*participant_registry.names(settings), *settings.external_participants]
    return sagas.build_registry(settings.definition_modules, participants=known)


def build_service(
    settings: Settings, engine: Any, publish: PublishOnCommit | None = None
) -> SagaService:
    registry = build_registry(settings)
    keys = signing.message_keys(settings)
    for recipient in [None, *registry.participants()]:  # refuse to start, not to sign later
        if keys.signing_key(signing.ORCHESTRATOR, recipient) is None:
            raise SettingsError(
                f"SAGA_SIGNING_KEYS holds no key to sign as the {signing.ORCHESTRATOR}"
                + (f" for {recipient}" if recipient else "")
                + " (or set SAGA_DEV_KEYS=1 in development)"
            )
    return SagaService(
        SqlUnitOfWork(engine, publish, publish, keys),
        registry,
        settings.topic,
        max_input_bytes=settings.max_input_bytes,
        keys=sealed.key_ring(settings),
        idempotency_ttl_s=settings.idempotency_ttl_s,
    )


async def create_topics(settings: Settings) -> list[str]:
    return await topics.ensure_topics(settings, build_registry(settings).participants())


def run_api(settings: Settings, port: int | None = None) -> None:
    authenticator = Authenticator(settings)
    if authenticator.insecure:
        log.warning("api_insecure", detail="SAGA_INSECURE_DEV is set: no authentication")
    engine = engine_for(settings, settings.db_pool_size)
    publisher = Publisher(
        settings.kafka_bootstrap_servers, "saga-api", security=kafka_security(settings)
    )
    publish = PublishOnCommit(publisher, SqlOutbox(engine).mark_published)

    async def schema_at_head() -> None:
        await migrate.check_at_head(engine)

    async def close() -> None:
        await publish.drain()
        await publisher.stop()
        await engine.dispose()

    app = create_app(
        build_service(settings, engine, publish),
        SqlSagaReader(engine, overdue_after_s=settings.timer_overdue_after_s),
        authenticator,
        max_body_bytes=settings.max_body_bytes,
        max_batch_body_bytes=settings.max_batch_body_bytes,
        schema_check=schema_at_head,
        on_shutdown=close,
        trusted_hosts=guards.allowed_hosts(settings.trusted_hosts, settings.api_host),
        metrics_cache_s=settings.metrics_cache_s,
        metrics_token=settings.metrics_token,
    )
    uvicorn.run(
        app,
        host=settings.api_host,
        port=port or settings.api_port,
        # None: uvicorn's default config gives its loggers plain-text handlers of their own
        log_config=None,
        log_level="warning",
        timeout_graceful_shutdown=10,
    )


def run_worker(settings: Settings) -> None:
    engine = engine_for(settings, settings.db_pool_size, pre_ping=False)
    asyncio.run(create_topics(settings))
    publisher = Publisher(
        settings.kafka_bootstrap_servers, "saga-orchestrator", security=kafka_security(settings)
    )
    outbox = SqlOutbox(engine)
    relay = OutboxRelay(
        outbox,
        publisher,
        settings.relay_batch_size,
        settings.relay_poll_interval_s,
        lease_s=settings.relay_lease_s,
        recover_after_s=settings.relay_recover_after_s,
        retention_s=settings.outbox_retention_s,
    )
    publish = PublishOnCommit(publisher, outbox.mark_published, relay.wake)
    service = build_service(settings, engine, publish)

    async def parked(message: Message, reason: str, record: consumer.Consumed) -> None:
        origin = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        await service.record_dead_letter(message, reason, origin)

    keys = signing.message_keys(settings)
    unverifiable = [p for p in build_registry(settings).participants() if not keys.holds_any([p])]
    if unverifiable:
        raise SettingsError(
            f"SAGA_SIGNING_KEYS holds no key to verify the replies of {', '.join(unverifiable)}"
        )
    authentic = signing.replies(keys)
    handle_replies = group_commit.Merging(service.handle_replies, settings.apply_slots)
    apply_replies = consumer.applying(handle_replies, publisher, parked, authentic)
    replies = consuming(settings, "orchestrator", "replies", apply_replies)

    async def apply_starts(records: list[consumer.Consumed]) -> None:
        await ingress.apply_starts(records, service.start_sagas, publisher)

    starts = consuming(settings, "orchestrator-starts", "starts", apply_starts)

    async def relay_outbox() -> None:
        log.info("outbox_relay_started")
        await relay.run()

    retention = SqlRetention(engine)
    purges = [
        Purge("processed_message", partial(retention.purge_processed, settings.dedup_retention_s))
    ]
    if settings.drop_finished and settings.finished_retention_s:
        drop = partial(retention.remove_finished, settings.finished_retention_s)
        purges.append(Purge("finished_saga", drop, batch=100))
    housekeeping = Housekeeping(purges, settings.housekeeping_interval_s)

    async def keep_house() -> None:
        await housekeeping.run()

    timers = scheduler.Timers(service, settings.timer_interval_s)
    service.on_wake_time = timers.wake_at

    async def fire_timers() -> None:
        log.info("timers_started")
        await timers.run()

    async def close() -> None:
        await publish.drain()
        await publisher.stop()
        await engine.dispose()

    faust_app.serve(
        settings,
        f"{settings.topic_namespace}-orchestrator",
        [replies, starts],
        close,
        tasks=[relay_outbox, fire_timers, keep_house],
        web_port=settings.worker_metrics_port,
    )
