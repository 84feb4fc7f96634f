"""The faust-streaming application shell shared by the worker and the participants."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from prometheus_client import Gauge, generate_latest

from orchestrator import logs
from orchestrator.settings import Settings
from orchestrator.transport.consumer import Consumed

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


def consume(app: faust.App, topic_name: str, apply: Callable[[Consumed], Awaitable[None]]) -> None:
    """Run `apply` on every record of a topic, one at a time per partition.

    faust acknowledges a record when the loop takes the next one, and commits acknowledged
    offsets only: an offset is committed after `apply` (and its database commit) returned.
    """
    topic = app.topic(topic_name, key_serializer="raw", value_serializer="raw")

    async def agent(stream: Any) -> None:
        async for event in stream.events():
            m = event.message
            record = Consumed(
                m.topic, m.partition, m.offset, m.key, m.value, list(m.headers or [])
            )
            # Shielded: a shutdown lets the message in hand finish and commit (see run()).
            task = asyncio.ensure_future(apply(record))
            _IN_FLIGHT.add(task)
            task.add_done_callback(_IN_FLIGHT.discard)
            await asyncio.shield(task)

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
