"""Tracing: off (and free) without an OTLP endpoint; on, spans with the ids the messages'
traceparent headers name."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from orchestrator import codec, tracing
from orchestrator.saga import messages
from orchestrator.sagas import build_registry
from orchestrator.service import SagaService
from tests.fakes import FakeDatabase
from tests.unit.test_saga import ORDER_INPUT

NOW = datetime(2026, 1, 1, tzinfo=UTC)

RUN_A_SAGA_UNTRACED = """
import asyncio, sys
from datetime import UTC, datetime

from orchestrator import tracing
from orchestrator.api.app import create_app
from orchestrator.saga import messages
from orchestrator.sagas import build_registry
from orchestrator.service import SagaService
from tests.fakes import FakeDatabase
from tests.unit.test_saga import ORDER_INPUT

tracing.configure("saga-worker")
assert not tracing.enabled


class Clock:
    def now(self):
        return datetime(2026, 1, 1, tzinfo=UTC)


async def main():
    db = FakeDatabase(Clock())
    service = SagaService(db, build_registry(), lambda channel: channel)
    saga, _ = await service.start_saga("order", ORDER_INPUT)
    while db.sagas[saga.id].status == "running":
        command = [p.message for p in db.outbox if p.message.kind == "command"][-1]
        source = command.message_type.split(".")[0]
        reply = messages.reply_to(
            command, source=source, outcome=messages.Outcome.SUCCESS, now=Clock().now()
        )
        await service.handle_replies([reply])
    assert db.sagas[saga.id].status == "completed"
    create_app(service, None, None)


asyncio.run(main())
# (FastAPI imports the OpenTelemetry API itself; the SDK and the exporter are ours alone)
print(sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk", "opentelemetry.exp"))))
"""


def test_without_an_endpoint_tracing_is_off_and_the_sdk_never_imported() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", RUN_A_SAGA_UNTRACED],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


class FixedClock:
    def now(self) -> datetime:
        return NOW


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Tracing on, as `configure` sets it up, into memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "saga-worker"}),
        id_generator=tracing._given_ids(),
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    monkeypatch.setattr(tracing, "enabled", True)
    yield exporter
    provider.shutdown()


def span_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.span_id:016x}"


def parent_id(span: ReadableSpan) -> str | None:
    return None if span.parent is None else f"{span.parent.span_id:016x}"


async def test_a_saga_records_its_commands_replies_and_itself_in_its_trace(
    spans: InMemorySpanExporter,
) -> None:
    db = FakeDatabase(FixedClock())
    service = SagaService(db, build_registry(), lambda channel: f"ns.{channel}")
    saga, _ = await service.start_saga("order", ORDER_INPUT, trace_id="ab" * 16)
    replies = []
    while db.sagas[saga.id].status == "running":
        command = [p.message for p in db.outbox if p.message.kind is messages.Kind.COMMAND][-1]
        replies.append(
            messages.reply_to(
                command,
                source=command.message_type.split(".")[0],
                outcome=messages.Outcome.SUCCESS,
                now=NOW,
            )
        )
        await service.handle_replies([replies[-1]])

    finished = spans.get_finished_spans()
    assert {f"{s.context.trace_id:032x}" for s in finished if s.context} == {"ab" * 16}
    by_name = {s.name: s for s in finished}
    saga_span = by_name["saga order"]
    assert saga_span.attributes == {
        "saga.id": saga.id,
        "saga.type": "order",
        "saga.status": "completed",
    }
    for published in db.outbox:
        message = published.message
        send = by_name[f"send {message.message_type}"]
        assert span_id(send) == codec.traceparent(message).split("-")[2]
        assert parent_id(send) == span_id(saga_span)
    for reply in replies:
        apply = by_name[f"apply {reply.message_type}"]
        assert parent_id(apply) == codec.traceparent(reply).split("-")[2]
        assert apply.attributes is not None
        assert apply.attributes["step"] == reply.step
        assert apply.attributes["outcome"] == "success"
    assert len(finished) == len(db.outbox) + len(replies) + 1


async def test_a_request_span_becomes_the_parent_of_the_saga_it_starts(
    spans: InMemorySpanExporter,
) -> None:
    trace = tracing.begin_request("00-" + "cd" * 16 + "-" + "12" * 8 + "-01")
    assert tracing.request_trace_id() == "cd" * 16
    db = FakeDatabase(FixedClock())
    service = SagaService(db, build_registry(), lambda channel: f"ns.{channel}")
    saga, _ = await service.start_saga("order", ORDER_INPUT, trace_id=tracing.request_trace_id())
    tracing.started_by_request(saga)
    tracing.end_request(trace, "POST /sagas", 1, 2, {"http.route": "/sagas"}, failed=False)
    (request,) = [s for s in spans.get_finished_spans() if s.name == "POST /sagas"]
    assert parent_id(request) == "12" * 8
    assert span_id(request) == tracing._start_span_id(saga.id)
