"""Every record the running system writes matches the published contracts (contracts/).

The system runs on topics of its own, with only the published saga definitions, so that
every record on them was written by the orchestrator and the participants: order sagas that
complete and compensate, and trip sagas. Then each record of each topic but the dead-letter
ones is checked: its value against the JSON Schema of its message type and version, its
headers against the envelope's, and its topic against the channel the AsyncAPI document
gives its message.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.conftest import service_urls
from tests.e2e.kafka import every_record
from tests.e2e.orders import DECLINED_CARD, new_sku, order
from tests.e2e.system import System

pytestmark = pytest.mark.e2e

CONTRACTS = Path(__file__).resolve().parents[2] / "contracts"
Record = tuple[str, bytes | None, bytes, dict[str, str]]  # topic, key, value, headers


@pytest.fixture(scope="module")
def published_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    database_url, kafka = service_urls()
    workdir = tmp_path_factory.mktemp("contracts")
    with System(database_url, kafka, workdir, definitions="").running() as system:
        yield system


def trip(car_city: str) -> dict[str, Any]:
    return {
        "tripId": f"t-{uuid.uuid4().hex[:8]}",
        "traveller": "Ada",
        "flight": {"from": "BER", "to": "LIS", "date": "2027-05-01"},
        "hotel": {"city": "Lisbon", "checkIn": "2027-05-01", "nights": 2},
        "car": {"city": car_city, "days": 3},
    }


async def _every_record(kafka: str, namespace: str) -> list[Record]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.split(","))
    await admin.start()
    try:
        topics = sorted(
            t
            for t in await admin.list_topics()
            if t.startswith(namespace + ".") and not t.endswith(".dlq")
        )
    finally:
        await admin.close()
    return [
        (r.topic, r.key, r.value or b"", {k: v.decode() for k, v in r.headers})
        async for r in every_record(kafka, topics)
    ]


def channel_of_message(document: dict[str, Any], namespace: str) -> dict[str, str]:
    """message name -> the topic the AsyncAPI document puts it on."""
    found = {}
    for channel in document["channels"].values():
        for name in channel["messages"]:
            found.setdefault(name, channel["address"].replace("{namespace}", namespace))
    return found


def validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def test_every_record_on_the_topics_matches_its_published_schema(
    published_only: System,
) -> None:
    system = published_only
    sku = new_sku(system, 10)
    started = [
        system.start_saga(order(sku), version=1),
        system.start_saga(order(sku, card=DECLINED_CARD), version=1),
        system.start_saga(order(sku, country="AQ"), version=1),  # refunds, then releases
        system.start_saga(trip("Lisbon"), saga_type="trip"),
        system.start_saga(trip("Atlantis"), saga_type="trip"),  # no car: cancels the rest
    ]
    statuses = [system.wait_final(saga_id)["status"] for saga_id in started]
    assert statuses == ["completed", "compensated", "compensated", "completed", "compensated"]

    records = asyncio.run(_every_record(system.kafka, system.namespace))

    document = json.loads((CONTRACTS / "asyncapi.json").read_text())
    topic_of = channel_of_message(document, system.namespace)
    headers = validator(document["components"]["schemas"]["envelopeHeaders"])
    problems, seen = [], set()
    for topic, key, value, record_headers in records:
        try:
            envelope = json.loads(value)
        except ValueError as exc:
            problems.append(f"{topic}: not JSON ({exc}): {value[:300]!r}")
            continue
        name = f"{envelope.get('messageType')}.v{envelope.get('version')}"
        if topic == f"{system.namespace}.starts":
            name = "saga.start.v1"
        seen.add(name)
        path = CONTRACTS / "schemas" / f"{name}.json"
        if not path.exists():
            problems.append(f"{topic}: {name} is not published: {value[:300]!r}")
            continue
        errors = [e.message for e in validator(json.loads(path.read_text())).iter_errors(envelope)]
        if name != "saga.start.v1":
            errors += [f"headers: {e.message}" for e in headers.iter_errors(record_headers)]
            if key is None or key.decode() != envelope["sagaId"]:
                errors.append(f"the key {key!r} is not the saga id")
        if topic_of.get(name) != topic:
            errors.append(f"on {topic}, but published on {topic_of.get(name)}")
        problems += [f"{topic}: {name}: {error}: {value[:300]!r}" for error in errors]
    assert problems == []
    expected = {
        "inventory.reserve.v1",
        "inventory.release.reply.v1",
        "payment.charge.reply.v1",
        "payment.refund.v1",
        "shipping.create.reply.v1",
        "car.book.reply.v1",
        "hotel.cancel.v1",
        "saga.started.v1",
        "saga.completed.v1",
        "saga.compensated.v1",
    }
    assert expected <= seen, sorted(seen)
