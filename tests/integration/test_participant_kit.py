"""The participant kit's rules, through its test kit, on the shipped payment participant:
resolves answered from the ledger, fencing, stored results for compensations, repeats."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from orchestrator.saga.messages import Outcome
from orchestrator.settings import Settings
from participants.kit.participant import Result
from participants.kit.testing import ParticipantTester
from participants.payment.handlers import make_participant
from participants.payment.tables import charge, refund

CHARGE = {
    "orderId": "o-1",
    "customerId": "c-1",
    "amount": "12.50",
    "currency": "EUR",
    "card": "4242424242424242",
    "statementDescriptor": "SHOP",
}


@pytest.fixture
async def payments(migrated_database: str) -> AsyncIterator[ParticipantTester]:
    settings = Settings(database_url=migrated_database, kafka_bootstrap_servers="127.0.0.1:9")
    participant = make_participant(settings)
    async with ParticipantTester.rolled_back(participant, migrated_database) as tester:
        yield tester


async def charges(conn: AsyncConnection) -> list[tuple[str, str]]:
    rows = await conn.execute(sa.select(charge.c.id, charge.c.status).order_by(charge.c.id))
    return [(r.id, r.status) for r in rows]


async def test_a_resolve_finds_an_applied_action_with_the_result_it_stored(
    payments: ParticipantTester,
) -> None:
    charged = await payments.action("payment.charge", CHARGE, step="charge_payment")
    assert charged.outcome is Outcome.SUCCESS

    resolved = await payments.resolve(charged)

    assert resolved.outcome is Outcome.SUCCESS
    assert resolved.data == {"resolution": "applied", "result": charged.data}
    assert await charges(payments.conn) == [(charged.data["chargeId"], "captured")]


async def test_a_resolve_before_the_action_fences_it_for_good(
    payments: ParticipantTester,
) -> None:
    late = payments.command("payment.charge", CHARGE, step="charge_payment")

    resolved = await payments.resolve(late)
    applied_late = await payments.send(late)  # the action arrives after all
    again = await payments.resolve(late)

    assert resolved.data == {"resolution": "fenced", "compensated": False}
    assert applied_late.outcome is Outcome.FAILURE
    assert applied_late.error["code"] == "fenced"
    assert again.data["resolution"] == "fenced"
    assert await charges(payments.conn) == []  # no money moved


async def test_a_compensation_gets_the_stored_result_when_the_reply_was_lost(
    payments: ParticipantTester,
) -> None:
    charged = await payments.action("payment.charge", CHARGE, step="charge_payment")
    # the orchestrator never saw `charged`: its compensation carries nothing of it
    refunded = await payments.compensation("payment.refund", {}, of=charged)

    assert refunded.outcome is Outcome.SUCCESS
    assert await charges(payments.conn) == [(charged.data["chargeId"], "refunded")]
    amounts = await payments.conn.execute(sa.select(refund.c.charge_id, refund.c.amount))
    assert [(r.charge_id, r.amount) for r in amounts] == [
        (charged.data["chargeId"], Decimal("12.50"))
    ]
    resolved = await payments.resolve(charged)
    assert resolved.data == {"resolution": "fenced", "compensated": True}


async def test_a_repeated_command_is_answered_from_the_inbox_and_not_applied_again(
    payments: ParticipantTester,
) -> None:
    command = payments.command("payment.charge", CHARGE, step="charge_payment")
    first = await payments.send(command)
    second = await payments.send(command)  # redelivered: the same message id
    retried = await payments.action(  # a new attempt of the same step
        "payment.charge", CHARGE, saga_id=command.saga_id, step="charge_payment", attempt=2
    )

    assert second.data == first.data == retried.data
    assert len(await charges(payments.conn)) == 1


async def test_a_compensation_of_a_step_never_applied_leaves_a_tombstone(
    payments: ParticipantTester,
) -> None:
    never = payments.command("payment.charge", CHARGE, step="charge_payment")
    compensated = await payments.compensation("payment.refund", {}, of=never)
    hanging = await payments.send(never)

    assert compensated.data == {"empty": True}
    assert hanging.outcome is Outcome.FAILURE
    assert await charges(payments.conn) == []


async def test_refused_and_retryable_answers_leave_nothing_behind(
    payments: ParticipantTester,
) -> None:
    declined = await payments.action(
        "payment.charge", {**CHARGE, "card": "4000000000000002"}, step="charge_payment"
    )
    flaky = await payments.action(
        "payment.charge", {**CHARGE, "card": "4000000000000119"}, step="charge_payment"
    )

    assert declined.outcome is Outcome.FAILURE
    assert declined.error["code"] == "card_declined"
    assert flaky.outcome is Outcome.RETRYABLE
    assert await charges(payments.conn) == []
    # neither is recorded as applied: a resolve fences both
    assert (await payments.resolve(declined)).data["resolution"] == "fenced"


async def test_what_one_test_writes_is_rolled_back(migrated_database: str) -> None:
    settings = Settings(database_url=migrated_database, kafka_bootstrap_servers="127.0.0.1:9")
    participant = make_participant(settings)

    async def raising(conn: AsyncConnection, command: object) -> Result:
        raise RuntimeError("boom")

    async with ParticipantTester.rolled_back(participant, migrated_database) as tester:
        await tester.action("payment.charge", CHARGE, step="charge_payment")
        assert len(await charges(tester.conn)) == 1
    async with ParticipantTester.rolled_back(participant, migrated_database) as tester:
        assert await charges(tester.conn) == []
    broken = dataclasses.replace(participant, actions={"payment.charge": raising})
    async with ParticipantTester.rolled_back(broken, migrated_database) as tester:
        failed = await tester.action("payment.charge", CHARGE)
        assert failed.outcome is Outcome.RETRYABLE
        assert failed.error["code"] == "handler_failed"


def test_a_participant_cannot_take_the_kits_own_resolve_command(migrated_database: str) -> None:
    settings = Settings(database_url=migrated_database, kafka_bootstrap_servers="127.0.0.1:9")
    participant = make_participant(settings)
    handler = participant.actions["payment.charge"]
    with pytest.raises(ValueError, match=r"'payment\.resolve' is the kit's own command"):
        dataclasses.replace(participant, actions={"payment.resolve": handler})
