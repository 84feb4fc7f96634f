"""The order saga over Kafka with SASL_SSL and ACLs and PostgreSQL with TLS and a role per
process; what a participant's credentials cannot reach."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError

from tests.e2e.orders import DECLINED_CARD, journey, new_sku, order, stock
from tests.e2e.secured import (
    ORDER_PARTICIPANTS,
    SecuredSystem,
    kafka_options,
    principal_env,
    start_secured_services,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredSystem]:
    start_secured_services()
    workdir: Path = tmp_path_factory.mktemp("secured")
    with SecuredSystem(workdir).running(ORDER_PARTICIPANTS) as system:
        yield system


def test_an_order_completes_over_the_secured_services(secured: SecuredSystem) -> None:
    sku = new_sku(secured, 10)

    saga = secured.wait_final(secured.start_saga(order(sku, quantity=3), version=1))

    assert saga["status"] == "completed", saga
    assert stock(secured, sku) == 7
    assert [s["status"] for s in saga["steps"]] == ["succeeded"] * 3
    assert (
        secured.scalar(
            "SELECT count(*) FROM shipping.shipment WHERE saga_id = %s AND status = 'created'",
            saga["id"],
        )
        == 1
    )


def test_a_declined_order_is_compensated_over_the_secured_services(
    secured: SecuredSystem,
) -> None:
    sku = new_sku(secured, 10)

    saga = secured.wait_final(secured.start_saga(order(sku, card=DECLINED_CARD), version=1))

    assert saga["status"] == "compensated", saga
    assert stock(secured, sku) == 10
    assert journey(saga) == [
        ("command_sent", "reserve_inventory"),
        ("command_sent", "charge_payment"),
        ("step_failed", "charge_payment"),
        ("compensation_sent", "reserve_inventory"),
        ("step_compensated", "reserve_inventory"),
    ]


def test_every_process_connects_as_its_own_role_over_tls(secured: SecuredSystem) -> None:
    # client backends only: an autovacuum worker in the database has no user
    others = (
        "datname = current_database() AND pid <> pg_backend_pid() "
        "AND backend_type = 'client backend'"
    )
    users = secured.scalar(
        f"SELECT array_agg(DISTINCT usename::text) FROM pg_stat_activity WHERE {others}"
    )
    assert set(users) == {"saga_orchestrator", *(f"saga_{p}" for p in ORDER_PARTICIPANTS)}
    assert secured.scalar(
        f"SELECT bool_and(ssl) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE {others}"
    )


def _consume_as(principal: str, topic: str, group: str | None) -> int:
    """Records fetched from the topic by a consumer logged in as the principal, in the
    group (none: no group, the topic's ACL alone decides)."""

    async def consume() -> int:
        consumer = AIOKafkaConsumer(
            topic,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=10_000,
            **kafka_options(principal),
        )
        try:  # stopped also when the broker refused the start
            await consumer.start()
            batches = await asyncio.wait_for(consumer.getmany(timeout_ms=3_000), 20)
            return sum(len(records) for records in batches.values())
        finally:
            await consumer.stop()

    return asyncio.run(consume())


def test_payment_cannot_read_the_inventory_commands(secured: SecuredSystem) -> None:
    topic = f"{secured.namespace}.inventory.commands"
    with pytest.raises(GroupAuthorizationFailedError):
        _consume_as("payment", topic, f"{secured.namespace}-participant-inventory")
    with pytest.raises(TopicAuthorizationFailedError):
        _consume_as("payment", topic, None)
    # the control: the same consumer with the owner's credentials reads the commands sent
    assert _consume_as("inventory", topic, None) > 0


def test_payment_cannot_touch_the_inventory_tables(secured: SecuredSystem) -> None:
    url = secured.principal("payment")["SAGA_DATABASE_URL"]
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
        assert conn.execute("SELECT count(*) FROM payment.charge").fetchone() is not None
        conn.rollback()
        for statement in (
            "SELECT * FROM inventory.stock",
            "UPDATE inventory.stock SET quantity = 0",
            "SELECT * FROM saga",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
            conn.rollback()


def test_postgres_refuses_a_connection_without_tls(secured: SecuredSystem) -> None:
    url = principal_env("payment")["SAGA_DATABASE_URL"].partition("?")[0]
    with pytest.raises(psycopg.OperationalError, match=r"pg_hba\.conf rejects"):
        psycopg.connect(
            url.replace("postgresql+psycopg://", "postgresql://", 1) + "?sslmode=disable"
        )
