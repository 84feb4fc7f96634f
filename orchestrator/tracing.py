"""OpenTelemetry spans, exported over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT (or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set; the other OTEL_* variables apply as usual.

A saga outlives the processes that move it, so no span is held open: each is recorded
whole, with its start and end times, once what it stands for is over and committed. Its ids
are the ones the others can compute: a message's span is the one its traceparent header
names (`codec.traceparent`), the saga's span id is derived from the saga id, and so is the
id of the span that started the saga (the POST /sagas request, or a `start` span). A rolled
back transaction records nothing; a process that dies before its batch is exported loses
those spans.

Off, this costs the hot path one check of `enabled`: the callers test it before calling
anything here, and the SDK is imported only by `configure`, when an endpoint is set.
"""

from __future__ import annotations

import atexit
import contextvars
import dataclasses
import hashlib
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from orchestrator import codec
from orchestrator.saga import messages
from orchestrator.saga.machine import TERMINAL, SagaStatus

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.id_generator import IdGenerator
    from opentelemetry.trace import Tracer

    from orchestrator.saga import saga as core

enabled = False
_tracer: Tracer | None = None
# The trace and span id the next span gets (a span id of 0: a random one). The SDK makes
# random ids; an IdGenerator that reads these lets a span have the id a message names.
_next_ids: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "next_span_ids", default=None
)
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


def configure(service_name: str) -> None:
    """Export spans when an OTLP endpoint is configured; else leave tracing off. Once per
    process, at start; the spans still queued are sent at exit."""
    global enabled, _tracer
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not endpoint or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(
        resource=Resource.create({"service.name": name}), id_generator=_given_ids()
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    atexit.register(provider.shutdown)
    _tracer = provider.get_tracer("saga-orchestrator")
    enabled = True


def _given_ids() -> IdGenerator:
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class GivenIds(RandomIdGenerator):
        def generate_span_id(self) -> int:
            given = _next_ids.get()
            return given[1] if given and given[1] else super().generate_span_id()

        def generate_trace_id(self) -> int:  # asked for a span without a parent only
            given = _next_ids.get()
            return given[0] if given else super().generate_trace_id()

    return GivenIds()


# -- the api ------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class RequestTrace:
    """The span of one api request, decided while it runs, recorded when it ends."""

    trace_id: str
    span_id: str
    parent_id: str | None  # the caller's span, from its traceparent header


_request: contextvars.ContextVar[RequestTrace | None] = contextvars.ContextVar(
    "request_trace", default=None
)


def begin_request(traceparent: str | None) -> RequestTrace:
    """The request's span: in the caller's trace when it sent a traceparent, else in a new
    one, which the sagas it starts join."""
    caller = _ids_of_header(traceparent)
    trace_id, parent_id = caller if caller else (secrets.token_hex(16), None)
    trace = RequestTrace(trace_id, secrets.token_hex(8), parent_id)
    _request.set(trace)
    return trace


def request_trace_id() -> str:
    """The trace of the request being served, "" outside one."""
    trace = _request.get()
    return trace.trace_id if trace else ""


def started_by_request(saga: core.Saga) -> None:
    """POST /sagas started this saga: the request's span takes the id that the saga's span
    names as its parent."""
    trace = _request.get()
    if trace is not None and trace.trace_id == _trace_of(saga):
        trace.span_id = _start_span_id(saga.id)


def started_in_request(sagas: Sequence[core.Saga], start_ns: int, end_ns: int) -> None:
    """A request started these sagas: a `start` span for each, a child of the request's."""
    trace = _request.get()
    for saga in sagas:
        parent = trace.span_id if trace and trace.trace_id == _trace_of(saga) else None
        _started(saga, parent, start_ns, end_ns)


def end_request(
    trace: RequestTrace,
    name: str,
    start_ns: int,
    end_ns: int,
    attributes: Mapping[str, str | int],
    failed: bool,
) -> None:
    _record(
        name,
        trace.trace_id,
        trace.span_id,
        trace.parent_id,
        start_ns,
        end_ns,
        "server",
        attributes,
        "server error" if failed else None,
    )


# -- the orchestrator ---------------------------------------------------------------------


def started_by_message(
    saga: core.Saga, traceparent: str | None, start_ns: int, end_ns: int
) -> None:
    """A start request read from Kafka started this saga: its `start` span, a child of the
    request's traceparent when the saga is in that trace."""
    caller = _ids_of_header(traceparent)
    parent = caller[1] if caller and caller[0] == _trace_of(saga) else None
    _started(saga, parent, start_ns, end_ns)


def decided(before: core.Saga | None, decision: core.Decision, start_ns: int, end_ns: int) -> None:
    """A committed decision: a `send` span for each message it sent, a child of the saga's
    span, and the saga's span when the decision ended the saga (a terminal status is never
    left, so that span is recorded once). `before` is the saga as the decision found it."""
    saga = decision.saga
    saga_span = _saga_span_id(saga.id)
    for out in decision.outgoing:
        trace_id, span_id = _ids_of(out.message)
        attributes = _attributes(out.message)
        _record(
            f"send {out.message.message_type}",
            trace_id,
            span_id,
            saga_span,
            start_ns,
            end_ns,
            "producer",
            attributes,
        )
    if saga.status in TERMINAL and (before is None or before.status not in TERMINAL):
        started = saga.started_at or decision.now
        _record(
            f"saga {saga.type}",
            _trace_of(saga),
            saga_span,
            _start_span_id(saga.id),
            _ns(started),
            max(_ns(decision.now), _ns(started)),
            "internal",
            {"saga.id": saga.id, "saga.type": saga.type, "saga.status": saga.status.value},
            None if saga.status is SagaStatus.COMPLETED else saga.status.value,
        )


def reply_applied(reply: messages.Message, saga: core.Saga, start_ns: int, end_ns: int) -> None:
    """The worker applied a reply: a child of the reply's span."""
    trace_id, span_id = _ids_of(reply)
    attributes = {**_attributes(reply), "saga.status": saga.status.value}
    _record(
        f"apply {reply.message_type}",
        trace_id,
        None,
        span_id,
        start_ns,
        end_ns,
        "consumer",
        attributes,
    )


# -- the participants ---------------------------------------------------------------------


def commands_handled(
    participant: str,
    handled: Sequence[tuple[messages.Message, messages.Message]],
    applied: set[str],
    times: tuple[int, int, int],
) -> None:
    """A participant committed a batch of (command, reply) and published the replies:
    for each command a `handle` span, a child of the command's, and for each reply it
    gave now (not one from its inbox, whose span was recorded when it was first given) a
    `send` span, a child of the `handle` span. `applied`: the ids of the commands applied
    now; `times`: the batch's start, its commit, and the replies' publication."""
    start_ns, committed_ns, published_ns = times
    answered: set[str] = set()
    for command, reply in handled:
        trace_id, command_span = _ids_of(command)
        handle_span = secrets.token_hex(8)
        repeat = command.message_id not in applied or command.message_id in answered
        answered.add(command.message_id)
        outcome = str(reply.payload.get("outcome", ""))
        _record(
            f"handle {command.message_type}",
            trace_id,
            handle_span,
            command_span,
            start_ns,
            committed_ns,
            "consumer",
            {**_attributes(command), "participant": participant, "outcome": outcome,
             "repeat": repeat},
        )  # fmt: skip
        if not repeat:
            reply_trace, reply_span = _ids_of(reply)
            _record(
                f"send {reply.message_type}",
                reply_trace,
                reply_span,
                handle_span,
                committed_ns,
                published_ns,
                "producer",
                _attributes(reply),
            )


# -- ids and recording --------------------------------------------------------------------


def _started(saga: core.Saga, parent_id: str | None, start_ns: int, end_ns: int) -> None:
    _record(
        f"start {saga.type}",
        _trace_of(saga),
        _start_span_id(saga.id),
        parent_id,
        start_ns,
        end_ns,
        "internal",
        {"saga.id": saga.id, "saga.type": saga.type},
    )


def _saga_span_id(saga_id: str) -> str:
    return hashlib.sha256(f"saga {saga_id}".encode()).hexdigest()[:16]


def _start_span_id(saga_id: str) -> str:
    return hashlib.sha256(f"start {saga_id}".encode()).hexdigest()[:16]


def _trace_of(saga: core.Saga) -> str:
    return codec.saga_trace_id(saga.trace_id, saga.id)


def _ids_of(message: messages.Message) -> tuple[str, str]:
    """The trace id and span id of the message's traceparent header."""
    _, trace_id, span_id, _ = codec.traceparent(message).split("-")
    return trace_id, span_id


def _ids_of_header(traceparent: str | None) -> tuple[str, str] | None:
    match = _TRACEPARENT.match((traceparent or "").strip().lower())
    if match is None or match[1] == "0" * 32 or match[2] == "0" * 16:
        return None
    return match[1], match[2]


def _attributes(message: messages.Message) -> dict[str, str | int | bool]:
    attributes: dict[str, str | int | bool] = {
        "saga.id": message.saga_id,
        "saga.type": message.saga_type,
        "messaging.message.id": message.message_id,
    }
    if message.step:
        attributes["step"] = message.step
        attributes["attempt"] = message.attempt
    if message.kind is messages.Kind.REPLY:
        attributes["outcome"] = str(message.payload.get("outcome", ""))
    return attributes


def _ns(at: datetime) -> int:
    return int(at.timestamp()) * 1_000_000_000 + at.microsecond * 1_000


def _record(
    name: str,
    trace_id: str,
    span_id: str | None,
    parent_id: str | None,
    start_ns: int,
    end_ns: int,
    kind: str,
    attributes: Mapping[str, str | int | bool],
    error: str | None = None,
) -> None:
    """One finished span with these ids (a random span id when `span_id` is None)."""
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    assert _tracer is not None, "tracing.configure was not called"
    context = Context()  # no parent: not whatever span happens to be current
    if parent_id is not None:
        parent = SpanContext(
            int(trace_id, 16),
            int(parent_id, 16),
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
        context = trace.set_span_in_context(trace.NonRecordingSpan(parent))
    token = _next_ids.set((int(trace_id, 16), int(span_id, 16) if span_id else 0))
    try:
        span = _tracer.start_span(
            name, context, SpanKind[kind.upper()], dict(attributes), start_time=start_ns
        )
    finally:
        _next_ids.reset(token)
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error))
    span.end(end_time=end_ns)
