"""What the conformance run does to a participant, each scenario on sagas of its own, and
what it concludes from the replies and dead letters that came back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator import codec
from orchestrator.conformance.probe import Check, Probe, Status, failed, outcome_of, passed
from orchestrator.conformance.wire import Received
from orchestrator.saga import messages

Scenario = Callable[[Probe], Coroutine[Any, Any, list[Check]]]
_SUCCESS = messages.Outcome.SUCCESS


def _new_saga() -> str:
    return messages.new_id()


def _ok(received: Received | None) -> bool:
    message = received.message if received is not None else None
    return message is not None and message.outcome is _SUCCESS


def _refused(received: Received) -> bool:
    return received.message is not None and received.message.outcome is messages.Outcome.FAILURE


async def _applied(probe: Probe, saga_id: str) -> messages.Message | str:
    """The reply of an action applied on a new saga, or why there is none."""
    action = probe.action(saga_id)
    await probe.send(action)
    replies = await probe.answer(action)
    if not replies:
        return f"not checked: no reply to {action.message_type} within {probe.timeout_s}s"
    if not _ok(replies[0]) or replies[0].message is None:
        return (
            f"not checked: the example {action.message_type} got {outcome_of(replies[0])}; "
            "give an input the participant accepts (--input)"
        )
    return replies[0].message


def _same_reply(rule: str, replies: list[Received], what: str) -> Check:
    if len(replies) < 2:
        return failed(rule, f"{len(replies)} of 2 replies came to the {what} delivered twice")
    first, second = replies[0].message, replies[1].message
    if first is None or second is None:  # not so: answers() holds decoded replies only
        return failed(rule, "a reply does not decode")
    if first.message_id == second.message_id and first.payload == second.payload:
        return passed(rule, f"reply {first.message_id} both times")
    return failed(
        rule,
        f"a new reply {second.message_id} ({outcome_of(replies[1])}) to the repeat, not the "
        f"stored {first.message_id} ({outcome_of(replies[0])}): applied again?",
    )


async def valid_action(probe: Probe) -> list[Check]:
    action = probe.action(_new_saga())
    await probe.send(action)
    replies = await probe.answer(action)
    rule = "valid-action-replied"
    if not replies:
        return [failed(rule, f"no reply to {action.message_type} within {probe.timeout_s}s")]
    return [passed(rule, outcome_of(replies[0]))]


async def duplicate(probe: Probe) -> list[Check]:
    action = probe.action(_new_saga())
    value = await probe.send(action)
    await probe.send(action, value)
    replies = await probe.answer(action, 2)
    return [_same_reply("duplicate-answered-from-store", replies, action.message_type)]


async def compensation_after_action(probe: Probe) -> list[Check]:
    rules = ["compensation-after-action-succeeds", "repeated-compensation-answered-from-store"]
    saga_id = _new_saga()
    applied = await _applied(probe, saga_id)
    if isinstance(applied, str):
        return [failed(rule, applied) for rule in rules]
    compensation = probe.compensation(saga_id, applied.data)
    value = await probe.send(compensation)
    first = await probe.answer(compensation)
    if not first:
        done = failed(rules[0], f"no reply to {compensation.message_type}")
    elif _ok(first[0]):
        done = passed(rules[0], outcome_of(first[0]))
    else:
        done = failed(rules[0], outcome_of(first[0]))
    await probe.send(compensation, value)
    replies = await probe.answer(compensation, 2)
    return [done, _same_reply(rules[1], replies, compensation.message_type)]


async def empty_compensation(probe: Probe) -> list[Check]:
    saga_id = _new_saga()
    compensation, action = probe.compensation(saga_id, {}), probe.action(saga_id)
    await probe.send(compensation)
    await probe.send(action)
    replies = await probe.answer(compensation)
    empty = "empty-compensation-succeeds"
    if not replies:
        first = failed(empty, f"no reply to {compensation.message_type}")
    else:
        first = (passed if _ok(replies[0]) else failed)(empty, outcome_of(replies[0]))
    late = await probe.answer(action)
    rule = "tombstone-refuses-late-action"
    if not late:
        return [first, failed(rule, f"no reply to the late {action.message_type}")]
    if _refused(late[0]):
        return [first, passed(rule, outcome_of(late[0]))]
    return [first, failed(rule, f"the late action got {outcome_of(late[0])}: it must be refused")]


async def resolve_applied(probe: Probe) -> list[Check]:
    rule = "resolve-reports-applied"
    saga_id = _new_saga()
    applied = await _applied(probe, saga_id)
    if isinstance(applied, str):
        return [failed(rule, applied)]
    resolve = probe.resolve(saga_id)
    await probe.send(resolve)
    replies = await probe.answer(resolve)
    if not replies or replies[0].message is None:
        return [failed(rule, f"no reply to {resolve.message_type}")]
    data = replies[0].message.data if _ok(replies[0]) else {}
    if data.get("resolution") == "applied" and data.get("result") == dict(applied.data):
        return [passed(rule, outcome_of(replies[0]))]
    return [failed(rule, f"{outcome_of(replies[0])}; expected applied with {dict(applied.data)}")]


async def resolve_fenced(probe: Probe) -> list[Check]:
    rule = "resolve-fences-action"
    saga_id = _new_saga()
    resolve, action = probe.resolve(saga_id), probe.action(saga_id)
    await probe.send(resolve)
    await probe.send(action)
    replies, late = await probe.answer(resolve), await probe.answer(action)
    if not replies or not late:
        return [failed(rule, f"no reply to {resolve.message_type} or to the action after it")]
    data = replies[0].message.data if _ok(replies[0]) and replies[0].message else {}
    if data.get("resolution") != "fenced":
        return [failed(rule, f"{outcome_of(replies[0])}; expected resolution fenced")]
    if not _refused(late[0]):
        return [failed(rule, f"the action after the fence got {outcome_of(late[0])}")]
    return [passed(rule, f"fenced; the action then got {outcome_of(late[0])}")]


async def expired_compensation(probe: Probe) -> list[Check]:
    rule = "expired-compensation-not-applied"
    saga_id = _new_saga()
    applied = await _applied(probe, saga_id)
    if isinstance(applied, str):
        return [failed(rule, applied)]
    past = datetime.now(UTC) - timedelta(minutes=1)
    late = probe.compensation(saga_id, applied.data, deadline=past)
    await probe.send(late)
    replies = await probe.answer(late)
    if not replies:
        return [failed(rule, f"no reply to a {late.message_type} past its deadline")]
    if _ok(replies[0]):
        return [failed(rule, f"applied after its deadline: {outcome_of(replies[0])}")]
    again = probe.compensation(saga_id, applied.data, attempt=2)
    await probe.send(again)
    retried = await probe.answer(again)
    if not retried or not _ok(retried[0]):
        got = outcome_of(retried[0]) if retried else "no reply"
        return [failed(rule, f"the next attempt, in time, got {got}")]
    return [passed(rule, f"{outcome_of(replies[0])}; the next attempt succeeded")]


async def _not_applied(probe: Probe, rule: str, command: messages.Message) -> Check:
    """The command is dead-lettered or refused (failure or retryable), never applied."""
    value = await probe.send(command)
    await probe.wire.wait(
        lambda: bool(probe.answers(command)) or probe.dead_letter(value) is not None,
        probe.timeout_s,
    )
    await asyncio.sleep(probe.settle_s)
    replies, dead = probe.answers(command), probe.dead_letter(value)
    applied = [r for r in replies if _ok(r)]
    if applied:
        return failed(rule, f"applied: {outcome_of(applied[0])}")
    if replies:
        return passed(rule, outcome_of(replies[0]))
    if dead is not None:
        return passed(rule, f"dead-lettered: {dead.header('failure_reason')}")
    return failed(rule, f"neither answered nor dead-lettered within {probe.timeout_s}s")


async def unknown_version(probe: Probe) -> list[Check]:
    action = probe.action(_new_saga(), version=2**31 - 1)
    return [await _not_applied(probe, "unknown-version-refused", action)]


async def invalid_payload(probe: Probe) -> list[Check]:
    action = probe.action(_new_saga(), payload={})
    return [await _not_applied(probe, "invalid-payload-not-applied", action)]


async def poison(probe: Probe) -> list[Check]:
    """Poison first, then a valid command on the same saga (the same partition)."""
    saga_id = _new_saga()
    action = probe.action(saga_id)
    incomplete = codec.to_dict(action)
    del incomplete["messageType"]
    values = {
        "garbage-dead-lettered": b"\xff\x00 not json " + saga_id.encode(),
        "non-object-dead-lettered": json.dumps(["not", "an", "envelope", saga_id]).encode(),
        "incomplete-envelope-dead-lettered": json.dumps(incomplete).encode(),
    }
    for value in values.values():
        await probe.send_raw(saga_id, value)
    await probe.send(action)
    replies = await probe.answer(action)
    await probe.dead_lettered(*values.values())
    await asyncio.sleep(probe.settle_s)
    stray = [r for r in probe.wire.replies if r.key == saga_id and r not in replies]
    checks = [_dead_lettered(probe, rule, value, stray) for rule, value in values.items()]
    after = "works-after-poison"
    if not replies:
        return [*checks, failed(after, f"no reply to {action.message_type} after the poison")]
    return [*checks, passed(after, outcome_of(replies[0]))]


def _dead_lettered(probe: Probe, rule: str, value: bytes, stray: list[Received]) -> Check:
    dead = probe.dead_letter(value)
    if stray:
        return failed(rule, f"answered: {outcome_of(stray[0])}")
    if dead is None:
        return failed(rule, f"not in {probe.wire.commands}.dlq within {probe.timeout_s}s")
    return passed(rule, f"dead-lettered: {dead.header('failure_reason')}")


async def unsigned(probe: Probe) -> list[Check]:
    rule = "unsigned-command-dead-lettered"
    action = probe.action(_new_saga())
    value = await probe.send(action, signed=False)
    await probe.wire.wait(
        lambda: bool(probe.answers(action)) or probe.dead_letter(value) is not None,
        probe.timeout_s,
    )
    await asyncio.sleep(probe.settle_s)
    replies = probe.answers(action)
    return [_dead_lettered(probe, rule, value, replies)]


def not_applicable(rules: list[str]) -> list[Check]:
    return [Check(rule, Status.SKIP, "the step has no compensation") for rule in rules]


SCENARIOS: list[Scenario] = [
    valid_action,
    duplicate,
    resolve_applied,
    resolve_fenced,
    unknown_version,
    invalid_payload,
    poison,
    unsigned,
]
WITH_COMPENSATION: dict[Scenario, list[str]] = {
    compensation_after_action: [
        "compensation-after-action-succeeds",
        "repeated-compensation-answered-from-store",
    ],
    empty_compensation: ["empty-compensation-succeeds", "tombstone-refuses-late-action"],
    expired_compensation: ["expired-compensation-not-applied"],
}
