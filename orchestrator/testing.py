"""Test a saga definition in memory: scripted participants, a clock you move, no I/O.

It runs the same pure core as the worker::

    harness = SagaHarness(order.DEFINITION)
    harness.script("charge_payment", "failure")
    harness.start(order_input)
    harness.run()
    assert harness.status == "compensated"
    assert harness.compensations() == ["reserve_inventory"]

The scripted participants keep the participant kit's rules: a step's action applies once
(a repeat gets the stored reply), a compensation of a step never applied leaves a tombstone,
an action after its tombstone is refused, and a resolve is answered from the step's ledger.

`check_compensation_matrix(definition, saga_input)` runs every failure, timeout and abort of
every step, with outcomes unknown then applied or never applied, with and without duplicate
deliveries, and reports what went wrong (an empty list).
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

# "no_reply": the participant never applies this attempt nor answers it; "lost_reply": it
# applies it and its reply is lost, so the orchestrator does not know.
Scripted = Literal["success", "failure", "retryable", "no_reply", "lost_reply"]
Resolution = Literal["answer", "no_reply"]


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
        # replies the worker would dead-letter, with why: they changed nothing
        self.dead_lettered: list[tuple[messages.Message, str]] = []
        self._inbox: collections.deque[messages.Message] = collections.deque()
        self._scripts: dict[str, collections.deque[Scripted]] = {}
        self._compensation_scripts: dict[str, collections.deque[Scripted]] = {}
        self._resolve_scripts: dict[str, collections.deque[Resolution]] = {}
        self._data: dict[str, dict[str, Any]] = {}
        # the participants' step ledgers: "applied" (with its result), "compensated" or
        # "tombstone"; what each step's handlers really did
        self.ledger: dict[str, tuple[str, dict[str, Any]]] = {}
        self.actions_applied: collections.Counter[str] = collections.Counter()
        self.compensations_applied: collections.Counter[str] = collections.Counter()

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

    def script_resolution(self, step: str, *answers: Resolution) -> None:
        """Whether the step's participant answers its successive resolves; it answers after."""
        self.definition.step(step)
        self._resolve_scripts[step] = collections.deque(answers)

    # -- acting ------------------------------------------------------------------------------

    def start(self, saga_input: Mapping[str, Any]) -> core.Saga:
        validated = self.definition.validate_input(saga_input)
        self._apply(core.start(self.definition, self.saga_id, validated, self.now))
        return self.saga

    def deliver(self, reply: messages.Message) -> None:
        """Hand one reply to the saga, as the worker would: one that is not from the step's
        participant or does not answer the command last sent for the step is dead-lettered
        (see `dead_lettered`) and changes nothing."""
        unexpected = core.why_reply_does_not_count(self.saga, self.definition, reply)
        if unexpected is not None:
            self.dead_lettered.append((reply, unexpected))
            return
        self._apply(core.handle_reply(self.saga, self.definition, reply, self.now))

    def abort(self, reason: str = "test", actor: str = "tester") -> None:
        self._apply(operations.abort(self.saga, self.definition, self.now, actor, reason))

    def retry(self, reason: str = "test", actor: str = "tester") -> None:
        self._apply(operations.retry(self.saga, self.definition, self.now, actor, reason))

    def skip(self, step: str, reason: str = "test", actor: str = "tester") -> None:
        self._apply(
            operations.skip_compensation(self.saga, self.definition, step, self.now, actor, reason)
        )

    def fence(self, step: str, reason: str = "test", actor: str = "tester") -> None:
        self._apply(
            operations.fence_step(self.saga, self.definition, step, self.now, actor, reason)
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
        return [m.step for m in self.commands if self._kind(m) == "action"]

    def compensations(self) -> list[str]:
        """The steps whose compensation was sent, once per attempt, in order."""
        return [m.step for m in self.commands if self._kind(m) == "compensation"]

    def resolutions(self) -> list[str]:
        """The steps whose participant was asked to resolve the outcome, once per ask."""
        return [m.step for m in self.commands if self._kind(m) == "resolve"]

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

    def _kind(self, command: messages.Message) -> str:
        step = self.definition.step(command.step)
        if command.message_type == step.compensation:
            return "compensation"
        return "resolve" if command.message_type == step.resolve_command else "action"

    def _answer(self, command: messages.Message) -> None:
        """Answer as a participant built on the kit would, scripts deciding what the
        handlers do."""
        step, kind = command.step, self._kind(command)
        state, stored = self.ledger.get(step, (None, {}))
        scripted: Scripted
        if kind == "resolve":
            if _next(self._resolve_scripts.get(step), "answer") == "no_reply":
                return
            if state == "applied":
                data: dict[str, Any] = {"resolution": "applied", "result": stored}
            else:
                self.ledger.setdefault(step, ("tombstone", {}))
                data = {"resolution": "fenced"}
            self._reply(command, "success", data)
        elif kind == "compensation":
            if state != "applied":
                self.ledger.setdefault(step, ("tombstone", {}))
                self._reply(command, "success", {"empty": state is None})
                return
            scripted = _next(self._compensation_scripts.get(step), "success")
            if scripted in ("success", "lost_reply"):
                self.ledger[step] = ("compensated", {})
                self.compensations_applied[step] += 1
            self._reply(command, scripted, {})
        elif state in ("tombstone", "compensated"):
            self._reply(command, "failure", {})
        elif state == "applied":
            self._reply(command, "success", stored)
        else:
            scripted = _next(self._scripts.get(step), "success")
            if scripted in ("success", "lost_reply"):
                stored = dict(self._data.get(step, {}))
                self.ledger[step] = ("applied", stored)
                self.actions_applied[step] += 1
            self._reply(command, scripted, stored)

    def _reply(self, command: messages.Message, scripted: Scripted, data: dict[str, Any]) -> None:
        if scripted in ("no_reply", "lost_reply"):
            return
        reply = messages.reply_to(
            command,
            source=self.definition.step(command.step).participant,
            outcome=messages.Outcome(scripted),
            now=self.now,
            data=data if scripted == "success" else None,
            error_code=None if scripted == "success" else f"scripted_{scripted}",
            error_message=f"scripted {scripted}",
        )
        for _ in range(2 if self.duplicate_replies else 1):
            self.deliver(reply)


def _next(queue: collections.deque[Any] | None, default: Any) -> Any:
    return queue.popleft() if queue else default


Fault = Literal[
    "failure",
    "timeout_never_applied",
    "timeout_then_applied",
    "abort_never_applied",
    "abort_then_applied",
]


@dataclasses.dataclass(frozen=True)
class Scenario:
    step: str
    fault: Fault
    duplicates: bool


def check_compensation_matrix(
    definition: SagaDefinition, saga_input: Mapping[str, Any]
) -> list[str]:
    """Run every scenario on every step and check the saga's promises where it settles.

    For each step: its participant refuses it; its outcome stays unknown past its retries
    and it turns out applied (the reply was lost), or never applied; an operator aborts
    while it is in flight, and it turns out applied or never applied. Each runs with single
    and duplicate deliveries. It checks that the saga settles in the status the scenario
    calls for, that every effect before the pivot is compensated exactly once when the saga
    ends compensated, that nothing is compensated when it completes, that no compensation
    is sent for an action that never took effect, and that a pivot that took effect is
    never followed by compensations. Returns the problems found: empty means it passed.
    """
    problems: list[str] = []
    for scenario in _scenarios(definition):
        harness = _run_scenario(definition, saga_input, scenario)
        expected = _expected_status(definition, scenario)
        if harness.status != expected:
            problems.append(f"{scenario}: expected {expected}, got {harness.status}")
        problems += [f"{scenario}: {p}" for p in _broken_promises(definition, harness)]
    return problems


def _scenarios(definition: SagaDefinition) -> Iterable[Scenario]:
    pivot = definition.pivot_index
    for index, step in enumerate(definition.steps):
        faults: list[Fault] = ["failure", "timeout_never_applied", "timeout_then_applied"]
        if pivot is None or index <= pivot:  # an abort is refused once the pivot is passed
            faults += ["abort_never_applied", "abort_then_applied"]
        for fault in faults:
            for duplicates in (False, True):
                yield Scenario(step.name, fault, duplicates)


def _run_scenario(
    definition: SagaDefinition, saga_input: Mapping[str, Any], scenario: Scenario
) -> SagaHarness:
    harness = SagaHarness(definition, duplicate_replies=scenario.duplicates)
    step = definition.step(scenario.step)
    attempts = step.retry.max_attempts
    never: list[Scripted] = ["no_reply"] * attempts
    scripts: dict[Fault, list[Scripted]] = {
        "failure": ["failure"] * attempts,
        "timeout_never_applied": never,
        "timeout_then_applied": [*never[1:], "lost_reply"],
        "abort_never_applied": never,
        "abort_then_applied": ["lost_reply"],
    }
    harness.script(scenario.step, *scripts[scenario.fault])
    harness.start(saga_input)
    if scenario.fault.startswith("abort"):
        harness.run(until=lambda h: scenario.step in h.actions())
        if harness.saga.status not in SETTLED:
            harness.abort("matrix")
    harness.run()
    return harness


def _expected_status(definition: SagaDefinition, scenario: Scenario) -> str:
    index = next(i for i, s in enumerate(definition.steps) if s.name == scenario.step)
    pivot = definition.pivot_index
    after_pivot = pivot is not None and index > pivot
    if scenario.fault == "timeout_then_applied":
        # before the pivot the resolve finds it applied: the saga goes on as if answered
        return SagaStatus.FAILED.value if after_pivot else SagaStatus.COMPLETED.value
    if scenario.fault == "abort_then_applied" and index == pivot:
        return SagaStatus.COMPLETED.value  # the applied pivot overrules the abort
    return SagaStatus.FAILED.value if after_pivot else SagaStatus.COMPENSATED.value


def _broken_promises(definition: SagaDefinition, harness: SagaHarness) -> list[str]:
    problems = []
    status = harness.saga.status
    for step in definition.steps:
        name = step.name
        state = harness.ledger.get(name, (None, {}))[0]
        took_effect = harness.actions_applied[name] > 0
        if harness.actions_applied[name] > 1:
            problems.append(f"{name} was applied {harness.actions_applied[name]} times")
        if harness.compensations_applied[name] > 1:
            problems.append(f"{name} was compensated {harness.compensations_applied[name]} times")
        if name in harness.compensations() and not took_effect:
            problems.append(f"a compensation of {name} was sent, but it never took effect")
        if status is SagaStatus.COMPENSATED and took_effect:
            if step.pivot:
                problems.append(f"the pivot {name} took effect, yet the saga was compensated")
            elif step.compensation and state != "compensated":
                problems.append(f"{name} took effect and was never compensated")
        if status is SagaStatus.COMPLETED and state == "compensated":
            problems.append(f"{name} was compensated, yet the saga completed")
    return problems
