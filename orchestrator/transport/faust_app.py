"""The faust-streaming application shell shared by the worker and the participants."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import faust
import structlog
import uvloop
from faust.app.base import BootStrategy
from prometheus_client import Gauge, generate_latest

from orchestrator import logs
from orchestrator.settings import Settings
from orchestrator.transport.loop import ConsumerLoop

log = structlog.get_logger(__name__)

ReadyCheck = Callable[[], Awaitable[None]]


def serve(
    settings: Settings,
    app_id: str,
    loops: Sequence[ConsumerLoop],
    on_stop: Callable[[], Awaitable[None]],
    *,
    tasks: Sequence[Callable[[], Awaitable[None]]] = (),
    web_port: int = 0,
    ready_checks: Sequence[ReadyCheck] = (),
) -> None:
    """Run the consumer loops and `tasks` until SIGTERM or SIGINT, then stop the loops (the
    batches in hand finish and commit) and run `on_stop`. /readyz also runs each of
    `ready_checks`: one that raises makes the process not ready, with its message."""
    app = _create_app(settings, app_id, loops, web_port, ready_checks)
    for task in tasks:
        app.task(task)

    async def stopped(sender: Any, *args: Any, **kwargs: Any) -> None:
        await asyncio.gather(*(loop.stop() for loop in loops))
        await on_stop()

    shutdown_signal: Any = app.on_before_shutdown
    shutdown_signal.connect(stopped, weak=False)
    _run(app, settings)


def _create_app(
    settings: Settings,
    app_id: str,
    loops: Sequence[ConsumerLoop],
    web_port: int,
    ready_checks: Sequence[ReadyCheck] = (),
) -> faust.App:
    """The faust app: the process's lifecycle, its signals and, with a `web_port`, its
    /healthz, /readyz and /metrics. It runs each consumer loop as a task; faust's own
    consumer, producer and sensors are not started (the loops and the `Publisher` are the
    hot path's Kafka clients)."""
    brokers = ";".join(f"kafka://{s.strip()}" for s in settings.kafka_bootstrap_servers.split(","))
    app = faust.App(
        app_id,
        broker=brokers,
        web_enabled=bool(web_port),
        web_port=web_port or 6066,
        web_bind=settings.api_host,
        web_host=settings.api_host,
        topic_allow_declare=False,
        # faust makes a data directory per app, used for tables only: none here
        datadir=str(Path(tempfile.gettempdir()) / f"saga-{app_id}"),
    )
    app.boot_strategy = BootStrategy(
        app, enable_kafka=False, enable_web=bool(web_port), enable_sensors=False
    )
    for loop in loops:
        _run_as_task(app, loop)
    if web_port:
        _add_probes(app, loops, ready_checks)
    return app


def _run_as_task(app: faust.App, loop: ConsumerLoop) -> None:
    async def consume() -> None:
        await loop.run()

    consume.__name__ = consume.__qualname__ = "consume_" + loop.topic.replace(".", "_")
    app.task(consume)


def _add_probes(
    app: faust.App, loops: Sequence[ConsumerLoop], ready_checks: Sequence[ReadyCheck]
) -> None:
    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        """Ready once every consumer holds partitions (it is taking part in its group) and
        every check passes."""
        assigned = sum(len(loop.assignment()) for loop in loops)
        ready = all(loop.assignment() for loop in loops)
        body: dict[str, Any] = {"status": "ready" if ready else "waiting", "partitions": assigned}
        for check in ready_checks:
            try:
                await check()
            except Exception as exc:  # the reason is the answer
                ready = False
                body.update(status="waiting", reason=str(exc) or type(exc).__name__)
        return web.json(body, status=200 if ready else 503)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        for loop in loops:
            for tp, lag in loop.lag().items():
                CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(lag)
        # aiohttp sets the charset itself and refuses one in the content type
        return web.bytes(generate_latest(), content_type="text/plain; version=0.0.4")


def _run(app: faust.App, settings: Settings) -> None:
    # uvloop: less time in the event loop itself
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.set_event_loop(asyncio.new_event_loop())
    # faust narrates every rebalance at INFO; our own structured events say what matters.
    libraries = logs.library_level(settings.log_level)
    # mode clears the root logger's handlers when the worker starts and applies
    # `logging_config`, or else its own plain-text handler on stdout: give it ours.
    worker = _Worker(
        app,
        loglevel=libraries.upper(),
        quiet=True,
        redirect_stdouts=False,
        logging_config=logs.stdlib_config(settings.log_format, libraries),
    )
    worker.execute_from_commandline()


class _Worker(faust.Worker):
    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        """No terminal spinner: its handler sets the root logger to DEBUG, and every
        library's debug line would then be formatted and dropped, on the hot path too."""
        self.spinner = None


CONSUMER_LAG = Gauge(
    "saga_consumer_lag", "Records not yet processed, per partition", ["topic", "partition"]
)
