"""The composition root: the only place engines, producers and services are built."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
import uvicorn

from orchestrator import sagas, scheduler
from orchestrator.api.app import create_app
from orchestrator.api.auth import Authenticator
from orchestrator.saga.definition import DefinitionRegistry
from orchestrator.saga.messages import Message
from orchestrator.service import SagaService
from orchestrator.settings import Settings
from orchestrator.store import migrate
from orchestrator.store.queries import SqlSagaReader
from orchestrator.store.unit_of_work import SqlUnitOfWork, engine_for
from orchestrator.transport import consumer, faust_app, topics
from orchestrator.transport.producer import Publisher
from orchestrator.transport.relay import OutboxRelay

log = structlog.get_logger(__name__)


def build_registry(settings: Settings) -> DefinitionRegistry:
    """Every saga definition this deployment runs, checked against the participants known:
    those shipped in `participants/` and those named in SAGA_PARTICIPANTS."""
    from participants import registry as shipped

    known = [*shipped.names(), *settings.external_participants]
    return sagas.build_registry(settings.definition_modules, participants=known)


def build_service(settings: Settings, engine: Any) -> SagaService:
    return SagaService(
        SqlUnitOfWork(engine),
        build_registry(settings),
        settings.topic,
        max_input_bytes=settings.max_input_bytes,
        orphaned_after_s=settings.timer_orphaned_after_s,
    )


async def create_topics(settings: Settings) -> list[str]:
    return await topics.ensure_topics(settings, build_registry(settings).participants())


def run_api(settings: Settings, port: int | None = None) -> None:
    authenticator = Authenticator(settings)
    if authenticator.insecure:
        log.warning("api_insecure", detail="SAGA_INSECURE_DEV is set: no authentication")
    engine = engine_for(settings, settings.db_pool_size)

    async def schema_at_head() -> None:
        await migrate.check_at_head(engine)

    app = create_app(
        build_service(settings, engine),
        SqlSagaReader(engine),
        authenticator,
        max_body_bytes=settings.max_body_bytes,
        schema_check=schema_at_head,
        on_shutdown=engine.dispose,
    )
    uvicorn.run(
        app,
        host=settings.api_host,
        port=port or settings.api_port,
        log_level="warning",
        timeout_graceful_shutdown=10,
    )


def run_worker(settings: Settings) -> None:
    engine = engine_for(settings, settings.db_pool_size, pre_ping=False)
    service = build_service(settings, engine)
    asyncio.run(create_topics(settings))
    publisher = Publisher(settings.kafka_bootstrap_servers, "saga-orchestrator")
    relay = OutboxRelay(
        engine,
        publisher,
        settings.relay_batch_size,
        settings.relay_poll_interval_s,
        lease_s=settings.relay_lease_s,
    )
    app = faust_app.create_app(
        settings, f"{settings.topic_namespace}-orchestrator", settings.worker_metrics_port
    )

    async def parked(message: Message, reason: str, record: consumer.Consumed) -> None:
        origin = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        await service.record_dead_letter(message, reason, origin)

    async def apply_reply(record: consumer.Consumed) -> None:
        await consumer.apply(record, service.handle_reply, publisher, parked)

    async def apply_replies(records: list[consumer.Consumed]) -> None:
        await consumer.apply_batch(records, service.handle_replies, apply_reply)
        relay.wake()  # the next commands are committed: no need to wait for the NOTIFY

    faust_app.consume(app, settings.topic("replies"), apply_replies)

    @app.task  # type: ignore[untyped-decorator]
    async def relay_outbox() -> None:
        log.info("outbox_relay_started")
        await relay.run()

    @app.task  # type: ignore[untyped-decorator]
    async def fire_timers() -> None:
        log.info("timers_started")
        await scheduler.run_timers(service, settings.timer_interval_s)

    async def close() -> None:
        await publisher.stop()
        await engine.dispose()

    faust_app.run(app, settings, on_stop=close)
