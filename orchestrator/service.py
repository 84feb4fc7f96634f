"""Use cases: load, decide (in the pure core), store and enqueue, commit. One transaction each."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import structlog

from orchestrator import input_schema, metrics, sealed, tracing
from orchestrator.faults import holds_nul, printable
from orchestrator.group_commit import GroupCommit
from orchestrator.ports import (
    Idempotency,
    Publication,
    Refused,
    SagaStore,
    Started,
    StartRequest,
    UnitOfWork,
)
from orchestrator.saga import messages, operations
from orchestrator.saga import saga as core
from orchestrator.saga.contracts import Contracts
from orchestrator.saga.definition import DefinitionRegistry, Payload, SagaDefinition
from orchestrator.saga.errors import (
    IdempotencyConflictError,
    InputTooLargeError,
    InvalidSagaInputError,
    OrchestratorError,
    SagaNotFoundError,
    UnknownMessageTypeError,
)

log = structlog.get_logger(__name__)


class ReplyOutcome(enum.StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"


@dataclasses.dataclass(frozen=True, slots=True)
class _Prepared:
    definition: SagaDefinition
    saga_input: Mapping[str, Any]
    idempotency: Idempotency | None
    saga_id: str
    trace_id: str


class SagaService:
    def __init__(
        self,
        uow: UnitOfWork,
        registry: DefinitionRegistry,
        topic_of: Callable[[str], str],
        max_input_bytes: int = 262_144,
        keys: sealed.KeyRing | None = None,
        idempotency_ttl_s: float | None = None,
    ) -> None:
        self._uow = uow
        self._registry = registry
        self._topic_of = topic_of
        self._max_input_bytes = max_input_bytes
        self._idempotency_ttl_s = idempotency_ttl_s
        # without a ring (tests of the core use cases), the public development key
        self._keys = keys or sealed.KeyRing.development()
        self._known = [(d.name, d.version) for d in registry.all()]
        self._starts: GroupCommit[StartRequest, Started] = GroupCommit(self.start_sagas)
        # told the wake time of every saga this process stores (the timers sleep till then)
        self.on_wake_time: Callable[[datetime | None], None] = lambda at: None

    async def start_saga(
        self,
        saga_type: str,
        raw_input: Mapping[str, Any],
        version: int | None = None,
        idempotency_key: str | None = None,
        trace_id: str = "",
    ) -> tuple[core.Saga, bool]:
        """Start a saga; with a key, a repeat of the same request returns the saga it
        started (and False) and a different request with that key is refused.

        Requests that arrive together share one transaction (group commit): the first one
        in goes at once, and those that arrive while it commits go together after it."""
        started = await self._starts.submit(
            StartRequest(saga_type, raw_input, version, idempotency_key, trace_id)
        )
        if isinstance(started, Exception):
            raise started
        return started

    async def start_sagas(self, requests: Sequence[StartRequest]) -> list[Started]:
        """Start many sagas in one transaction: for each request, in order, the saga and
        whether it is new, or the error that refused this one request."""
        results: list[Started | None] = [None] * len(requests)
        prepared = []
        for i, request in enumerate(requests):
            try:
                prepared.append((i, self._prepare(request)))
            except OrchestratorError as exc:
                results[i] = exc
        if prepared:
            for (i, _), result in zip(
                prepared, await self._commit_apart([p for _, p in prepared]), strict=True
            ):
                results[i] = result
        return [r for r in results if r is not None]

    async def _commit_apart(self, prepared: Sequence[_Prepared]) -> list[Started]:
        """All in one transaction; if it fails, each in its own, so that a start the database
        refuses (or a fault) is the answer to that request alone."""
        try:
            return await self._commit_starts(prepared)
        except Exception as exc:
            if len(prepared) == 1:
                return [exc]
        results: list[Started] = []
        for one in prepared:
            try:
                results += await self._commit_starts([one])
            except Exception as exc:
                results.append(exc)
        return results

    def _prepare(self, request: StartRequest) -> _Prepared:
        definition = self._registry.get(request.saga_type, request.version)
        saga_id = request.saga_id or messages.new_id()
        clear_input = definition.validate_input(request.input)
        saga_input = self._seal(definition, clear_input, saga_id)
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
        if request.idempotency_key is not None:
            fingerprinted = self._fingerprinted(definition, clear_input)
            request_hash = _request_hash(request.saga_type, request.version, fingerprinted)
            idempotency = Idempotency(
                request.idempotency_key, request_hash, self._idempotency_ttl_s
            )
        return _Prepared(
            definition, saga_input, idempotency, saga_id, request.trace_id or uuid.uuid4().hex
        )

    def _seal(self, definition: SagaDefinition, saga_input: Payload, saga_id: str) -> Payload:
        """Sensitive fields are sealed before anything is stored or sent."""
        return _replace_sensitive(
            definition,
            saga_input,
            lambda value, field: self._keys.seal(value, field.reader, saga_id, field.path),
        )

    def _fingerprinted(self, definition: SagaDefinition, saga_input: Payload) -> Payload:
        """The input to compare a repeated request by: sensitive fields by a keyed digest
        (a sealing's nonce makes each differ; two cards with the same last four must not)."""
        return _replace_sensitive(
            definition,
            saga_input,
            lambda value, field: self._keys.fingerprint(value, field.reader, field.path),
        )

    async def _commit_starts(self, prepared: Sequence[_Prepared]) -> list[Started]:
        """One transaction for all: new sagas are stored, and a saga whose key (or id) was
        taken, now or before, is answered with the saga that took it."""
        started = time.time_ns() if tracing.enabled else 0
        async with self._uow.transaction() as store:
            now = await store.now()
            decisions = [
                core.start(p.definition, p.saga_id, p.saga_input, now, p.trace_id)
                for p in prepared
            ]
            await store.insert_many(
                [(d.saga, p.idempotency) for d, p in zip(decisions, prepared, strict=True)], now
            )
            await store.append_many(
                [(d.saga.id, d.timeline, self._publications(d)) for d in decisions], now
            )
            refused = await store.flush()
            results: list[Started] = []
            for decision, p in zip(decisions, prepared, strict=True):
                if decision.saga.id in refused:
                    results.append(await self._started_before(store, p))
                else:
                    results.append((decision.saga, True))
        for decision, p in zip(decisions, prepared, strict=True):
            if decision.saga.id not in refused:
                metrics.observe(p.definition, None, decision)
                log.debug("saga_started", saga_id=decision.saga.id, saga_type=decision.saga.type)
        if tracing.enabled:
            ended = time.time_ns()
            for decision in decisions:
                if decision.saga.id not in refused:
                    tracing.decided(None, decision, started, ended)
        return results

    async def _started_before(self, store: SagaStore, prepared: _Prepared) -> Started:
        if prepared.idempotency is None:  # its id was taken: the same start, repeated
            found = await store.load_many([prepared.saga_id], for_update=False)
            return (found[prepared.saga_id], False)
        key, request_hash = prepared.idempotency.key, prepared.idempotency.request_hash
        by_key = await store.find_by_idempotency_key(key)
        if by_key is None:  # the id was taken, by a start with another key
            return IdempotencyConflictError(
                f"saga id {prepared.saga_id} was started by another request"
            )
        saga, stored_hash = by_key
        if stored_hash != request_hash:
            # names neither the key (it may carry its caller's name) nor the saga
            return IdempotencyConflictError(
                "this idempotency key was used for a different request"
            )
        return (saga, False)

    async def operate(
        self, saga_id: str, action: str, actor: str, reason: str, step: str | None = None
    ) -> core.Saga:
        """Apply an operator action under the saga's row lock: one writer per saga."""
        started = time.time_ns() if tracing.enabled else 0
        async with self._uow.transaction() as store:
            saga = (await store.load_many([saga_id], for_update=True)).get(saga_id)
            if saga is None:
                raise SagaNotFoundError(f"no saga has id {saga_id}")
            await store.publish_pending_first([saga_id])
            now = await store.now()
            definition = self._registry.get(saga.type, saga.definition_version)
            if action == "abort":
                decision = operations.abort(saga, definition, now, actor, reason)
            elif action == "retry":
                decision = operations.retry(saga, definition, now, actor, reason)
            elif action == "skip" and step is not None:
                decision = operations.skip_compensation(saga, definition, step, now, actor, reason)
            elif action == "fence" and step is not None:
                decision = operations.fence_step(saga, definition, step, now, actor, reason)
            else:
                raise ValueError(f"unknown operator action {action!r}")
            if decision.timeline:  # a repeat that changed nothing stores nothing
                await store.update_many([decision.saga], now)
                await self._record(store, decision, now)
        metrics.observe(definition, saga, decision)
        if tracing.enabled:
            tracing.decided(saga, decision, started, time.time_ns())
        log.info("operator_action", saga_id=saga_id, action=action, actor=actor, step=step)
        return decision.saga

    async def handle_reply(self, reply: messages.Message) -> ReplyOutcome | Refused:
        return (await self.handle_replies([reply]))[0]

    async def handle_replies(
        self, replies: Sequence[messages.Message]
    ) -> list[ReplyOutcome | Refused]:
        """Apply replies in order, in one transaction: all of them or, on any error, none.

        Each saga is loaded and locked once, however many of its replies the batch holds, and
        stored once; its outbox messages keep the order in which they were decided. A reply
        that does not answer its step's last command (late, replayed, from another sender)
        changes nothing: it is `Refused`, noted on its saga's timeline, and not recorded as
        processed, so that a copy is refused again; the rest of the batch goes on.
        """
        if not replies:
            return []
        observed = []
        recorded: dict[str, tuple[list[core.TimelineEntry], list[Publication]]] = {}
        outcomes: list[ReplyOutcome | Refused] = []
        refused: list[str] = []
        started = time.time_ns() if tracing.enabled else 0
        async with self._uow.transaction() as store:
            fresh, sagas = await store.claim_replies([(r.message_id, r.saga_id) for r in replies])
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
                unexpected = core.why_reply_does_not_count(saga, definition, reply)
                timeline, publications = recorded.setdefault(saga.id, ([], []))
                if unexpected is not None:
                    timeline.append(_dead_lettered(reply, unexpected, {}))
                    refused.append(reply.message_id)
                    outcomes.append(Refused(printable(unexpected)))
                    continue
                decision = core.handle_reply(saga, definition, reply, now)
                sagas[saga.id] = decision.saga
                timeline.extend(decision.timeline)
                publications.extend(self._publications(decision))
                observed.append((definition, saga, decision, reply))
                outcomes.append(ReplyOutcome.APPLIED)
            if refused:
                await store.forget_processed(refused)
            if recorded:  # each saga stored once, as its last reply left it
                changed = {decision.saga.id for _, _, decision, _ in observed}
                await store.update_many([sagas[i] for i in recorded if i in changed], now)
                await store.append_many([(i, t, p) for i, (t, p) in recorded.items()], now)
        self._applied(observed, started)
        return outcomes

    def _applied(
        self,
        observed: list[tuple[SagaDefinition, core.Saga, core.Decision, messages.Message]],
        started: int,
    ) -> None:
        """What follows the commit of replies: wake times, metrics, logs, spans."""
        for definition, saga, decision, reply in observed:
            self.on_wake_time(decision.saga.wake_at)
            metrics.observe(definition, saga, decision)
            log.debug(
                "reply_applied",
                saga_id=reply.saga_id,
                step=reply.step,
                message_id=reply.message_id,
                outcome=reply.payload.get("outcome"),
                saga_status=decision.saga.status.value,
            )
        if tracing.enabled:
            ended = time.time_ns()
            for _, saga, decision, reply in observed:
                tracing.reply_applied(reply, decision.saga, started, ended)
                tracing.decided(saga, decision, started, ended)

    async def fire_timers(self, limit: int = 100) -> int:
        return (await self.fire_due(limit))[0]

    async def fire_due(self, limit: int = 100) -> tuple[int, datetime | None]:
        """Fire the deadlines and retries that are due, by the database's clock, for up to
        `limit` sagas at once; when none was due, also the next wake time of a saga whose
        definition this process has.

        Any number of workers may call this together, each with its own definitions: a saga
        is claimed by one of the workers that have its definition, and by no other however
        late it is (operators see it overdue). A saga whose timers cannot be decided (a
        payload builder raised) is parked with the reason, for an operator; the others fire
        all the same.
        """
        decisions = []
        started = time.time_ns() if tracing.enabled else 0
        async with self._uow.transaction() as store:
            due = await store.claim_due(limit, self._known)
            if not due:
                return 0, await store.next_wake(self._known)
            sagas = await store.load_many(due, for_update=True)
            await store.publish_pending_first(list(sagas))
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
                await store.update_many([decision.saga], now)
                decisions.append((definition, saga, decision))
                for entry in decision.timeline:
                    log.info(entry.kind, saga_id=saga.id, step=entry.step)
        for observed in decisions:
            metrics.observe(*observed)
        if tracing.enabled:
            ended = time.time_ns()
            for _, saga, decision in decisions:
                tracing.decided(saga, decision, started, ended)
        return len(due), None

    async def _park(self, store: SagaStore, saga: core.Saga, reason: str, now: datetime) -> None:
        reason = printable(reason)
        parked, entry = core.park(saga, reason)
        await store.update_many([parked], now)
        await store.append_many([(saga.id, [entry], [])], now)
        metrics.SAGAS_PARKED.inc()
        log.error("saga_parked", saga_id=saga.id, saga_type=saga.type, reason=reason)

    async def record_dead_letter(
        self, message: messages.Message, reason: str, origin: Mapping[str, Any]
    ) -> None:
        """Put a dead-lettered message on its saga's timeline, when the saga exists: one bad
        message parks one saga, visibly. What the message says is stored only in a form the
        database takes (no NUL, bounded)."""
        async with self._uow.transaction() as store:
            if not await store.load_many([message.saga_id], for_update=False):
                return
            entry = _dead_lettered(message, reason, origin)
            await store.append_many([(message.saga_id, [entry], [])], await store.now())

    def definition(self, saga_type: str, version: int) -> SagaDefinition:
        return self._registry.get(saga_type, version)

    async def _record(self, store: SagaStore, decision: core.Decision, now: datetime) -> None:
        appended = (decision.saga.id, decision.timeline, self._publications(decision))
        await store.append_many([appended], now)

    def _publications(self, decision: core.Decision) -> list[Publication]:
        return [
            Publication(
                self._topic_of(out.channel),
                out.message,
                None if out.channel == core.EVENTS_CHANNEL else out.channel,
            )
            for out in decision.outgoing
        ]


def _replace_sensitive(
    definition: SagaDefinition,
    saga_input: Payload,
    replace: Callable[[str, input_schema.SensitiveField], Any],
) -> Payload:
    fields = input_schema.sensitive_fields(definition.validate_input)
    if not fields:
        return saga_input
    result = dict(saga_input)
    for field in fields:
        if isinstance(result.get(field.path), str):
            result[field.path] = replace(result[field.path], field)
    return result


def _request_hash(saga_type: str, version: int | None, saga_input: Mapping[str, Any]) -> str:
    canonical = json.dumps([saga_type, version, saga_input], sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


REPLY_CONTRACTS = Contracts()  # replies have one version so far: any other is refused


def _check_reply_type(definition: SagaDefinition, reply: messages.Message) -> None:
    if reply.kind is not messages.Kind.REPLY:
        raise UnknownMessageTypeError(f"a {reply.kind.value} is not a reply")
    REPLY_CONTRACTS.read(reply)
    known = {
        t for s in definition.steps for t in (s.command, s.compensation, s.resolve_command) if t
    }
    if reply.replied_command_type not in known:
        raise UnknownMessageTypeError(
            f"{reply.message_type!r} answers no command of saga type "
            f"{definition.name} v{definition.version}"
        )


def _dead_lettered(
    message: messages.Message, reason: str, origin: Mapping[str, Any]
) -> core.TimelineEntry:
    return core.TimelineEntry(
        "message_dead_lettered",
        printable(message.step, 200) or None,
        {"type": printable(message.message_type, 200), "reason": printable(reason), **origin},
        message.message_id,
    )
