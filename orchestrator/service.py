"""Use cases: load, decide (in the pure core), store and enqueue, commit. One transaction each."""

from __future__ import annotations

import enum
import hashlib
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import structlog

from orchestrator import metrics
from orchestrator.faults import holds_nul, printable
from orchestrator.ports import (
    DuplicateIdempotencyKeyError,
    Idempotency,
    Publication,
    SagaStore,
    UnitOfWork,
)
from orchestrator.saga import messages, operations
from orchestrator.saga import saga as core
from orchestrator.saga.contracts import Contracts
from orchestrator.saga.definition import DefinitionRegistry, SagaDefinition
from orchestrator.saga.errors import (
    IdempotencyConflictError,
    InputTooLargeError,
    InvalidSagaInputError,
    SagaNotFoundError,
    UnknownMessageTypeError,
)

log = structlog.get_logger(__name__)


class ReplyOutcome(enum.StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"


class SagaService:
    def __init__(
        self,
        uow: UnitOfWork,
        registry: DefinitionRegistry,
        topic_of: Callable[[str], str],
        max_input_bytes: int = 262_144,
        orphaned_after_s: float = 60.0,
    ) -> None:
        self._uow = uow
        self._registry = registry
        self._topic_of = topic_of
        self._max_input_bytes = max_input_bytes
        self._orphaned_after_s = orphaned_after_s
        self._known = [(d.name, d.version) for d in registry.all()]

    async def start_saga(
        self,
        saga_type: str,
        raw_input: Mapping[str, Any],
        version: int | None = None,
        idempotency_key: str | None = None,
        trace_id: str = "",
    ) -> tuple[core.Saga, bool]:
        """Start a saga; with a key, a repeat of the same request returns the saga it
        started (and False) and a different request with that key is refused."""
        definition = self._registry.get(saga_type, version)
        saga_input = definition.validate_input(raw_input)
        try:
            encoded = json.dumps(saga_input, separators=(",", ":"), default=str, allow_nan=False)
        except ValueError:
            problem = {"field": "input", "problem": "NaN and Infinity are not JSON numbers"}
            raise InvalidSagaInputError([problem], "the input is not valid JSON") from None
        if holds_nul(encoded):
            problem = {"field": "input", "problem": "a string holds a NUL character (\\u0000)"}
            raise InvalidSagaInputError([problem], "the input cannot be stored")
        size = len(encoded)
        if size > self._max_input_bytes:
            raise InputTooLargeError(
                f"the input is {size} bytes as JSON; at most {self._max_input_bytes} are taken, "
                "so that every command built from it fits the broker's message size"
            )
        idempotency = None
        if idempotency_key is not None:
            idempotency = Idempotency(
                idempotency_key, _request_hash(saga_type, version, saga_input)
            )
            existing = await self._started_with(idempotency)
            if existing is not None:
                return existing, False
        trace_id = trace_id or uuid.uuid4().hex
        try:
            async with self._uow.transaction() as store:
                now = await store.now()
                decision = core.start(definition, messages.new_id(), saga_input, now, trace_id)
                await store.insert(decision.saga, now, idempotency)
                await self._record(store, decision, now)
            metrics.observe(definition, None, decision)
        except DuplicateIdempotencyKeyError:
            assert idempotency is not None
            existing = await self._started_with(idempotency)
            assert existing is not None, "the key's saga committed"
            return existing, False
        log.info("saga_started", saga_id=decision.saga.id, saga_type=saga_type, trace_id=trace_id)
        return decision.saga, True

    async def _started_with(self, idempotency: Idempotency) -> core.Saga | None:
        async with self._uow.transaction() as store:
            found = await store.find_by_idempotency_key(idempotency.key)
        if found is None:
            return None
        saga, request_hash = found
        if request_hash != idempotency.request_hash:
            raise IdempotencyConflictError(
                f"idempotency key {idempotency.key!r} was used for a different request "
                f"(saga {saga.id})"
            )
        return saga

    async def operate(
        self, saga_id: str, action: str, actor: str, reason: str, step: str | None = None
    ) -> core.Saga:
        """Apply an operator action under the saga's row lock: one writer per saga."""
        async with self._uow.transaction() as store:
            saga = await store.load(saga_id, for_update=True)
            if saga is None:
                raise SagaNotFoundError(f"no saga has id {saga_id}")
            now = await store.now()
            definition = self._registry.get(saga.type, saga.definition_version)
            if action == "abort":
                decision = operations.abort(saga, definition, now, actor, reason)
            elif action == "retry":
                decision = operations.retry(saga, definition, now, actor, reason)
            elif action == "skip" and step is not None:
                decision = operations.skip_compensation(saga, definition, step, now, actor, reason)
            else:
                raise ValueError(f"unknown operator action {action!r}")
            if decision.timeline:  # a repeat that changed nothing stores nothing
                await store.update(decision.saga, now)
                await self._record(store, decision, now)
        metrics.observe(definition, saga, decision)
        log.info("operator_action", saga_id=saga_id, action=action, actor=actor, step=step)
        return decision.saga

    async def handle_reply(self, reply: messages.Message) -> ReplyOutcome:
        return (await self.handle_replies([reply]))[0]

    async def handle_replies(self, replies: Sequence[messages.Message]) -> list[ReplyOutcome]:
        """Apply replies in order, in one transaction: all of them or, on any error, none.

        Each saga is loaded and locked once, however many of its replies the batch holds, and
        stored once; its outbox messages keep the order in which they were decided.
        """
        if not replies:
            return []
        observed = []
        recorded: dict[str, tuple[list[core.TimelineEntry], list[Publication]]] = {}
        outcomes = []
        async with self._uow.transaction() as store:
            fresh = await store.mark_processed_many([(r.message_id, r.saga_id) for r in replies])
            wanted = [r.saga_id for r in replies if r.message_id in fresh]
            sagas = await store.load_many(wanted, for_update=True) if wanted else {}
            now = await store.now()
            for reply in replies:
                if reply.message_id not in fresh:
                    log.info("duplicate_reply_ignored", message_id=reply.message_id)
                    outcomes.append(ReplyOutcome.DUPLICATE)
                    continue
                fresh.discard(reply.message_id)  # a repeat inside the batch is a duplicate too
                saga = sagas.get(reply.saga_id)
                if saga is None:
                    raise SagaNotFoundError(f"no saga has id {reply.saga_id}")
                definition = self._registry.get(saga.type, saga.definition_version)
                _check_reply_type(definition, reply)
                decision = core.handle_reply(saga, definition, reply, now)
                sagas[saga.id] = decision.saga
                timeline, publications = recorded.setdefault(saga.id, ([], []))
                timeline.extend(decision.timeline)
                publications.extend(self._publications(decision))
                observed.append((definition, saga, decision, reply))
                outcomes.append(ReplyOutcome.APPLIED)
            if recorded:  # each saga stored once, as its last reply left it
                await store.update_many([sagas[saga_id] for saga_id in recorded], now)
                await store.append_many([(i, t, p) for i, (t, p) in recorded.items()], now)
        for definition, saga, decision, reply in observed:
            metrics.observe(definition, saga, decision)
            log.info(
                "reply_applied",
                saga_id=reply.saga_id,
                step=reply.step,
                message_id=reply.message_id,
                outcome=reply.payload.get("outcome"),
                saga_status=decision.saga.status.value,
            )
        return outcomes

    async def fire_timers(self, limit: int = 100) -> int:
        """Fire the deadlines and retries that are due, by the database's clock, for up to
        `limit` sagas at once.

        Any number of workers may call this together: each saga is claimed by one of them,
        first by a worker that has its definition. A saga that cannot be decided (no worker
        had its definition for `orphaned_after_s`, a payload builder raised) is parked with
        the reason, for an operator; the others fire all the same.
        """
        decisions = []
        async with self._uow.transaction() as store:
            due = await store.claim_due(limit, self._known, self._orphaned_after_s)
            if not due:
                return 0
            sagas = await store.load_many(due, for_update=True)
            now = await store.now()
            for saga in sagas.values():
                try:
                    definition = self._registry.get(saga.type, saga.definition_version)
                    decision = core.handle_timers(saga, definition, now)
                    # first: it encodes the messages, and a payload no reader takes raises
                    await self._record(store, decision, now)
                except Exception as exc:  # anything a user's definition may raise
                    await self._park(store, saga, f"timers could not be decided: {exc!r}", now)
                    continue
                await store.update(decision.saga, now)
                decisions.append((definition, saga, decision))
                for entry in decision.timeline:
                    log.info(entry.kind, saga_id=saga.id, step=entry.step)
        for observed in decisions:
            metrics.observe(*observed)
        return len(due)

    async def _park(self, store: SagaStore, saga: core.Saga, reason: str, now: datetime) -> None:
        reason = printable(reason)
        parked, entry = core.park(saga, reason)
        await store.update(parked, now)
        await store.append(saga.id, [entry], [], now)
        metrics.SAGAS_PARKED.inc()
        log.error("saga_parked", saga_id=saga.id, saga_type=saga.type, reason=reason)

    async def record_dead_letter(
        self, message: messages.Message, reason: str, origin: Mapping[str, Any]
    ) -> None:
        """Put a dead-lettered message on its saga's timeline, when the saga exists: one bad
        message parks one saga, visibly. What the message says is stored only in a form the
        database takes (no NUL, bounded)."""
        async with self._uow.transaction() as store:
            if await store.load(message.saga_id, for_update=False) is None:
                return
            entry = core.TimelineEntry(
                "message_dead_lettered",
                printable(message.step, 200) or None,
                {
                    "type": printable(message.message_type, 200),
                    "reason": printable(reason),
                    **origin,
                },
                message.message_id,
            )
            await store.append(message.saga_id, [entry], [], await store.now())

    def definition(self, saga_type: str, version: int) -> SagaDefinition:
        return self._registry.get(saga_type, version)

    async def _record(self, store: SagaStore, decision: core.Decision, now: datetime) -> None:
        await store.append(decision.saga.id, decision.timeline, self._publications(decision), now)

    def _publications(self, decision: core.Decision) -> list[Publication]:
        return [Publication(self._topic_of(out.channel), out.message) for out in decision.outgoing]


def _request_hash(saga_type: str, version: int | None, saga_input: Mapping[str, Any]) -> str:
    canonical = json.dumps([saga_type, version, saga_input], sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


REPLY_CONTRACTS = Contracts()  # replies have one version so far: any other is refused


def _check_reply_type(definition: SagaDefinition, reply: messages.Message) -> None:
    if reply.kind is not messages.Kind.REPLY:
        raise UnknownMessageTypeError(f"a {reply.kind.value} is not a reply")
    REPLY_CONTRACTS.read(reply)
    known = {t for s in definition.steps for t in (s.command, s.compensation) if t}
    if reply.replied_command_type not in known:
        raise UnknownMessageTypeError(
            f"{reply.message_type!r} answers no command of saga type "
            f"{definition.name} v{definition.version}"
        )
