"""Test a saga definition in memory: scripted participants, a clock you move, no I/O.

It runs the same pure core as the worker::

    harness = SagaHarness(order.DEFINITION)
    harness.script("charge_payment", "failure")
    harness.start(order_input)
    harness.run()
    assert harness.status == "compensated"
    assert harness.compensations() == ["reserve_inventory"]

`check_compensation_matrix(definition, saga_input)` runs every failure and timeout of every
step, with and without duplicate deliveries, and reports what went wrong (an empty list).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from orchestrator.saga import messages, operations
from orchestrator.saga import saga as core
from orchestrator.saga.definition import SagaDefinition
from orchestrator.saga.machine import SETTLED, SagaStatus

Scripted = Literal["success", "failure", "retryable", "no_reply"]


class SagaHarness:
    """One saga, its scripted participants and a clock that moves only when told."""

    def __init__(
        self,
        definition: SagaDefinition,
        *,
        start_at: datetime = datetime(2026, 1, 1, tzinfo=UTC),
        saga_id: str = "00000000-0000-4000-8000-000000000000",
        duplicate_replies: bool = False,
    ) -> None:
        self.definition = definition
        self.now = start_at
        self.saga_id = saga_id
        self.duplicate_replies = duplicate_replies
        self._saga: core.Saga | None = None
        self.commands: list[messages.Message] = []
        self.events: list[messages.Message] = []
        self.timeline: list[core.TimelineEntry] = []
        self._inbox: collections.deque[messages.Message] = collections.deque()
        self._scripts: dict[str, collections.deque[Scripted]] = {}
        self._compensation_scripts: dict[str, collections.deque[Scripted]] = {}
        self._data: dict[str, dict[str, Any]] = {}

    # -- arranging ---------------------------------------------------------------------------

    def script(
        self, step: str, *outcomes: Scripted, data: Mapping[str, Any] | None = None
    ) -> None:
        """What the step's participant answers to its successive attempts; success after."""
        self.definition.step(step)  # fail fast on a typo
        self._scripts[step] = collections.deque(outcomes)
        if data is not None:
            self._data[step] = dict(data)

    def script_compensation(self, step: str, *outcomes: Scripted) -> None:
        self.definition.step(step)
        self._compensation_scripts[step] = collections.deque(outcomes)

    # -- acting ------------------------------------------------------------------------------

    def start(self, saga_input: Mapping[str, Any]) -> core.Saga:
        validated = self.definition.validate_input(saga_input)
        self._apply(core.start(self.definition, self.saga_id, validated, self.now))
        return self.saga

    def deliver(self, reply: messages.Message) -> None:
        """Hand one reply to the saga, as the worker would."""
        self._apply(core.handle_reply(self.saga, self.definition, reply, self.now))

    def abort(self, reason: str = "test", actor: str = "tester") -> None:
        self._apply(operations.abort(self.saga, self.definition, self.now, actor, reason))

    def retry(self, reason: str = "test", actor: str = "tester") -> None:
        self._apply(operations.retry(self.saga, self.definition, self.now, actor, reason))

    def skip(self, step: str, reason: str = "test", actor: str = "tester") -> None:
        self._apply(
            operations.skip_compensation(self.saga, self.definition, step, self.now, actor, reason)
        )

    def advance(self, seconds: float) -> None:
        """Move the clock, firing every deadline and retry time that falls on the way."""
        until = self.now + timedelta(seconds=seconds)
        while (wake := self.saga.wake_at) is not None and wake <= until:
            self.now = max(self.now, wake)
            self._apply(core.handle_timers(self.saga, self.definition, self.now))
        self.now = until

    def run(
        self, until: Callable[[SagaHarness], bool] | None = None, max_events: int = 10_000
    ) -> core.Saga:
        """Let the scripted participants answer and the clock run until the saga settles,
        or until `until(harness)` holds."""
        for _ in range(max_events):
            if until is not None and until(self):
                return self.saga
            if self._inbox:
                self._answer(self._inbox.popleft())
            elif self.saga.status in SETTLED or self.saga.wake_at is None:
                return self.saga
            else:
                self.advance((self.saga.wake_at - self.now).total_seconds())
        raise RuntimeError(f"saga did not settle after {max_events} events")

    # -- asserting ---------------------------------------------------------------------------

    @property
    def saga(self) -> core.Saga:
        if self._saga is None:
            raise RuntimeError("start the saga first")
        return self._saga

    @property
    def status(self) -> str:
        return self.saga.status.value

    def actions(self) -> list[str]:
        """The steps whose action was sent, once per attempt, in order."""
        return [m.step for m in self.commands if not self._is_compensation(m)]

    def compensations(self) -> list[str]:
        """The steps whose compensation was sent, once per attempt, in order."""
        return [m.step for m in self.commands if self._is_compensation(m)]

    def kinds(self) -> list[str]:
        return [e.kind for e in self.timeline]

    # -- inside ------------------------------------------------------------------------------

    def _apply(self, decision: core.Decision) -> None:
        self._saga = decision.saga
        self.timeline += decision.timeline
        for out in decision.outgoing:
            if out.channel == core.EVENTS_CHANNEL:
                self.events.append(out.message)
            else:
                self.commands.append(out.message)
                self._inbox.append(out.message)

    def _is_compensation(self, command: messages.Message) -> bool:
        return command.message_type == self.definition.step(command.step).compensation

    def _answer(self, command: messages.Message) -> None:
        scripts = self._compensation_scripts if self._is_compensation(command) else self._scripts
        queue = scripts.get(command.step)
        scripted: Scripted = queue.popleft() if queue else "success"
        if scripted == "no_reply":
            return
        reply = messages.reply_to(
            command,
            source=self.definition.step(command.step).participant,
            outcome=messages.Outcome(scripted),
            now=self.now,
            data=self._data.get(command.step) if scripted == "success" else None,
            error_code=None if scripted == "success" else f"scripted_{scripted}",
            error_message=f"scripted {scripted}",
        )
        for _ in range(2 if self.duplicate_replies else 1):
            self.deliver(reply)


@dataclasses.dataclass(frozen=True)
class Scenario:
    step: str
    fault: Literal["failure", "timeout"]
    duplicates: bool


def check_compensation_matrix(
    definition: SagaDefinition, saga_input: Mapping[str, Any]
) -> list[str]:
    """Fail, then time out, every step in turn, each with single and duplicate deliveries.

    Before the pivot, exactly the steps sent before the faulty one (and the faulty one
    itself when its outcome is unknown) must be compensated, in reverse order, once each,
    and the saga end compensated. After the pivot nothing is compensated and the saga ends
    failed. Returns the problems found; an empty list means the definition passed.
    """
    problems: list[str] = []
    for scenario in _scenarios(definition):
        harness = SagaHarness(definition, duplicate_replies=scenario.duplicates)
        step = definition.step(scenario.step)
        attempts = step.retry.max_attempts
        fault: Scripted = "failure" if scenario.fault == "failure" else "no_reply"
        harness.script(scenario.step, *[fault] * attempts)
        harness.start(saga_input)
        harness.run()
        expected_status, expected = _expected(definition, scenario)
        got = harness.compensations()
        if harness.status != expected_status or got != expected:
            problems.append(
                f"{scenario}: expected {expected_status} compensating {expected}, "
                f"got {harness.status} compensating {got}"
            )
    return problems


def _scenarios(definition: SagaDefinition) -> Iterable[Scenario]:
    for step in definition.steps:
        for fault in ("failure", "timeout"):
            for duplicates in (False, True):
                yield Scenario(step.name, fault, duplicates)


def _expected(definition: SagaDefinition, scenario: Scenario) -> tuple[str, list[str]]:
    steps = definition.steps
    index = next(i for i, s in enumerate(steps) if s.name == scenario.step)
    pivot = definition.pivot_index
    if pivot is not None and index > pivot:
        return SagaStatus.FAILED.value, []
    faulty = steps[index]
    sent = [
        s
        for i, s in enumerate(steps)
        if i <= index or (faulty.group is not None and s.group == faulty.group)
    ]
    undone = [
        s.name
        for s in reversed(sent)
        if s.compensation and (s.name != faulty.name or scenario.fault == "timeout")
    ]
    return SagaStatus.COMPENSATED.value, undone
