"""Prometheus metrics. Each process counts what it does; the api adds what the database
knows (sagas by status, the outbox backlog), which holds across every process."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from orchestrator.saga.definition import SagaDefinition
from orchestrator.saga.saga import Decision, Saga

DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)

STARTED = Counter("saga_started_total", "Sagas started", ["type"])
FINISHED = Counter("saga_finished_total", "Sagas that reached a final status", ["type", "status"])
SAGA_DURATION = Histogram(
    "saga_duration_seconds",
    "From start to final status",
    ["type", "status"],
    buckets=DURATION_BUCKETS,
)
STEP_DURATION = Histogram(
    "saga_step_duration_seconds",
    "From a command's dispatch to its reply",
    ["type", "step", "outcome"],
    buckets=DURATION_BUCKETS,
)
RETRIES = Counter("saga_step_retries_total", "Retries scheduled", ["type", "step"])
TIMEOUTS = Counter("saga_step_timeouts_total", "Deadlines that passed", ["type", "step"])
DEAD_LETTERS = Counter(
    "saga_dead_letters_total", "Messages sent to a dead-letter topic", ["topic"]
)
SAGAS_PARKED = Counter(
    "saga_parked_total", "Sagas parked for an operator because they could not be decided"
)
OUTBOX_PARKED = Counter(
    "saga_outbox_parked_total", "Outbox rows parked because the broker refused them for good"
)
PURGED = Counter(
    "saga_purged_total",
    "Rows removed past their retention: processed replies, a participant's inbox, finished sagas",
    ["what"],
)
UNAUTHENTICATED = Counter(
    "saga_messages_unauthenticated_total",
    "Messages dead-lettered because their signature is missing, unknown or wrong",
    ["topic"],
)
UNSIGNED_ACCEPTED = Counter(
    "saga_messages_unsigned_accepted_total",
    "Unsigned messages accepted because SAGA_REQUIRE_SIGNATURES is off",
)
DEAD_LETTER_FAILURES = Counter(
    "saga_dead_letter_failures_total",
    "Messages that could be neither applied nor dead-lettered (see the logs)",
    ["topic"],
)
RELAYED = Counter(
    "saga_outbox_relayed_total", "Outbox rows published by the relay (the recovery path)"
)
PUBLISHED_ON_COMMIT = Counter(
    "saga_outbox_published_on_commit_total",
    "Outbox rows published by the process that committed them, right after the commit",
)
RELAY_BATCH_SIZE = Histogram(
    "saga_outbox_relay_batch_size",
    "Outbox rows published per relay round",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
BATCH_SIZE = Histogram(
    "saga_consumed_batch_size",
    "Records applied together in one transaction",
    ["topic"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)

_FINAL_KINDS = {
    "saga_completed": "completed",
    "saga_compensated": "compensated",
    "saga_failed": "failed",
}


def observe(definition: SagaDefinition, before: Saga | None, decision: Decision) -> None:
    """Count what a decision did; `before` is the saga as it was loaded (None at start)."""
    saga_type = definition.name
    for entry in decision.timeline:
        if entry.kind == "saga_started":
            STARTED.labels(saga_type).inc()
        elif entry.kind in _FINAL_KINDS:
            status = _FINAL_KINDS[entry.kind]
            FINISHED.labels(saga_type, status).inc()
            if decision.saga.started_at is not None:
                elapsed = (decision.now - decision.saga.started_at).total_seconds()
                SAGA_DURATION.labels(saga_type, status).observe(elapsed)
        elif entry.kind in ("retry_scheduled", "compensation_retry_scheduled") and entry.step:
            RETRIES.labels(saga_type, entry.step).inc()
        elif entry.kind in ("step_timed_out", "compensation_timed_out") and entry.step:
            TIMEOUTS.labels(saga_type, entry.step).inc()
        elif entry.kind == "reply_received" and entry.step and before is not None:
            _observe_step(definition, before, entry.step, decision.now, entry.detail)


def _observe_step(
    definition: SagaDefinition, before: Saga, step: str, now: datetime, detail: Any
) -> None:
    state = before.steps.get(step)
    if state is None or state.deadline is None or state.status == "resolving":
        return  # a resolve's answer says nothing of how long the action took
    spec = definition.step(step)
    timeout = spec.compensation_timeout_s if state.status == "compensating" else spec.timeout_s
    sent_at = state.deadline.timestamp() - timeout
    STEP_DURATION.labels(definition.name, step, detail.get("outcome", "")).observe(
        max(0.0, now.timestamp() - sent_at)
    )


def database_gauges(stats: dict[str, Any], now: datetime) -> bytes:
    """The api's view of the database, rendered fresh at each scrape."""
    registry = CollectorRegistry()
    sagas = Gauge("saga_sagas", "Sagas by type and status", ["type", "status"], registry=registry)
    for saga_type, counts in stats["by_type"].items():
        for status, n in counts.items():
            sagas.labels(saga_type, status).set(n)
    Gauge("saga_outbox_backlog", "Outbox rows not yet published", registry=registry).set(
        stats["outbox_backlog"]
    )
    oldest = stats["outbox_oldest_unpublished_at"]
    Gauge(
        "saga_outbox_lag_seconds", "Age of the oldest unpublished outbox row", registry=registry
    ).set((now - oldest).total_seconds() if oldest else 0)
    overdue = Gauge(
        "saga_overdue",
        "Active sagas no running worker has fired in time, by type",
        ["type"],
        registry=registry,
    )
    for saga_type, n in stats["overdue"]["by_type"].items():
        overdue.labels(saga_type).set(n)
    resolving = Gauge(
        "saga_resolving",
        "Steps waiting on their participant to say whether their action took effect",
        ["step"],
        registry=registry,
    )
    for step, n in stats["resolving"]["by_step"].items():
        resolving.labels(step).set(n)
    return generate_latest(registry)
