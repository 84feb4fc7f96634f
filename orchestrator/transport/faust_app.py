"""The faust-streaming application shell shared by the worker and the participants."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import faust
import structlog
import uvloop
from prometheus_client import Gauge, generate_latest

from orchestrator import logs, metrics
from orchestrator.settings import Settings
from orchestrator.transport.consumer import Consumed

log = structlog.get_logger(__name__)

SHUTDOWN_GRACE_S = 15.0
_IN_FLIGHT: set[asyncio.Future[None]] = set()


def create_app(settings: Settings, app_id: str, web_port: int = 0) -> faust.App:
    """The faust app; with a `web_port`, it serves /healthz, /readyz and /metrics there."""
    brokers = ";".join(f"kafka://{s.strip()}" for s in settings.kafka_bootstrap_servers.split(","))
    app = faust.App(
        app_id,
        broker=brokers,
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=bool(web_port),
        web_port=web_port or 6066,
        web_bind=settings.api_host,
        web_host=settings.api_host,
        topic_disable_leader=True,
        topic_allow_declare=False,
        topic_partitions=settings.topic_partitions,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=100,
        broker_commit_interval=0.5,
        stream_wait_empty=True,
        producer_acks=-1,
        broker_session_timeout=settings.consumer_session_timeout_s,
        broker_heartbeat_interval=settings.consumer_session_timeout_s / 10,
    )
    if web_port:
        _add_probes(app)
    return app


def _add_probes(app: faust.App) -> None:
    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        """Ready once the consumer holds partitions: it is taking part in its group."""
        try:
            assigned = len(app.consumer.assignment())
        except Exception:  # the consumer is not started yet
            assigned = 0
        body = {"status": "ready" if assigned else "waiting", "partitions": assigned}
        return web.json(body, status=200 if assigned else 503)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        _observe_lag(app)
        # aiohttp sets the charset itself and refuses one in the content type
        return web.bytes(generate_latest(), content_type="text/plain; version=0.0.4")


def consume(
    app: faust.App,
    topic_name: str,
    apply: Callable[[list[Consumed]], Awaitable[None]],
    max_batch: int = 500,
) -> None:
    """Run `apply` on the records of a topic in batches, one batch at a time.

    A batch is every record already waiting when one arrives, up to `max_batch`: one record
    at low load, so nothing waits for company, and many at high load, when they share one
    transaction. Records keep their order, so a saga's messages are applied in the order
    they were published. Acks are manual: a batch's records are acknowledged once `apply`
    returned (its transaction committed), and faust commits acknowledged offsets only.
    """
    topic = app.topic(topic_name, key_serializer="raw", value_serializer="raw")
    batch_size = metrics.BATCH_SIZE.labels(topic_name)

    async def agent(stream: Any) -> None:
        manual = stream.noack()
        waiting = manual.channel.queue
        events: list[Any] = []
        async for event in manual.events():
            events.append(event)
            if len(events) < max_batch and not waiting.empty():
                continue
            records = [
                Consumed(m.topic, m.partition, m.offset, m.key, m.value, list(m.headers or []))
                for m in (e.message for e in events)
            ]
            batch_size.observe(len(records))
            # Shielded: a shutdown lets the batch in hand finish and commit (see run()).
            task = asyncio.ensure_future(apply(records))
            _IN_FLIGHT.add(task)
            task.add_done_callback(_IN_FLIGHT.discard)
            try:
                await asyncio.shield(task)
            except Exception:  # apply() ends every record itself; this is the last guard
                log.exception("consumer_batch_failed", topic=topic_name, size=len(records))
            for done in events:
                await manual.ack(done)
            events = []

    agent.__name__ = agent.__qualname__ = "consume_" + topic_name.replace(".", "_")
    app.agent(topic, name=agent.__name__)(agent)


def run(app: faust.App, settings: Settings, on_stop: Callable[[], Awaitable[None]]) -> None:
    """Run the app until SIGTERM or SIGINT; `on_stop` runs once the consumer has stopped."""

    async def stopped(sender: Any, *args: Any, **kwargs: Any) -> None:
        if _IN_FLIGHT:
            await asyncio.wait(_IN_FLIGHT, timeout=SHUTDOWN_GRACE_S)
        await on_stop()

    shutdown_signal: Any = app.on_before_shutdown
    shutdown_signal.connect(stopped, weak=False)
    # uvloop for this thread and for the consumer thread faust starts: less time in the loop
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.set_event_loop(asyncio.new_event_loop())
    # faust narrates every rebalance at INFO; our own structured events say what matters.
    libraries = "debug" if settings.log_level == "debug" else "warning"
    worker = faust.Worker(
        app,
        loglevel=libraries.upper(),
        quiet=True,
        redirect_stdouts=False,
        logging_config=logs.stdlib_config(settings.log_format, libraries),
    )
    worker.execute_from_commandline()


CONSUMER_LAG = Gauge(
    "saga_consumer_lag", "Records not yet processed, per partition", ["topic", "partition"]
)


def _observe_lag(app: faust.App) -> None:
    """Lag = the partition's high-water mark minus the committed offset, at scrape time."""
    consumer: Any = app.consumer
    try:
        assigned = consumer.assignment()
    except Exception:  # not started: nothing to report
        return
    for tp in assigned:
        highwater = consumer.highwater(tp)
        committed = consumer._committed_offset.get(tp)  # faust keeps no public accessor
        if highwater is not None:
            lag = max(0, highwater - (committed or 0))
            CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(lag)
