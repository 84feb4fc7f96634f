"""No full card number anywhere but in the payment participant's hands: not in the
database, not on any topic (DLQs included), not in a log, an api answer, the CLI or the
dashboard. Each place is first shown to hold the sagas, so that a search of the wrong place
cannot pass."""

from __future__ import annotations

import asyncio
import glob
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.e2e.orders import DECLINED_CARD, new_sku, order
from tests.e2e.system import VIEWER_TOKEN, System

pytestmark = pytest.mark.e2e


def new_card() -> str:
    return "4" + "".join(random.choices("0123456789", k=15))


def pg_dump(system: System) -> bytes:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"))
    command = found[-1] if found else "pg_dump"
    url = system.database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    dumped = subprocess.run([command, "--no-owner", url], capture_output=True, check=True)
    return dumped.stdout


async def _topic_bytes(system: System) -> dict[str, bytes]:
    """Every record of every topic of the system's namespace, from the beginning: keys,
    values and headers."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=system.kafka.split(","),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        topics = sorted(t for t in await consumer.topics() if t.startswith(system.namespace + "."))
        await consumer._client.set_topics(topics)  # loads their partitions; no public way
        partitions = [
            TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()
        ]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        read = {t: bytearray() for t in topics}
        async with asyncio.timeout(60):
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                batches = await consumer.getmany(timeout_ms=500)
                for tp, records in batches.items():
                    for r in records:
                        read[tp.topic] += (r.key or b"") + (r.value or b"")
                        read[tp.topic] += b"".join(k.encode() + v for k, v in r.headers)
        return {t: bytes(b) for t, b in read.items()}
    finally:
        await consumer.stop()


def signed_in(system: System) -> httpx.Client:
    """A browser's session on the dashboard, signed in as a viewer."""
    browser = httpx.Client(base_url=system.url, timeout=10, headers={"Origin": system.url})
    form = browser.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]*)"', form.text)
    assert csrf is not None, form.text
    answer = browser.post("/ui/login", data={"token": VIEWER_TOKEN, "csrf": csrf[1]})
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"].endswith("/ui"), answer.headers
    return browser


def cli_show(system: System, saga_id: str) -> bytes:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_")}
    env.update({"SAGA_API_URL": system.url, "SAGA_API_TOKEN": VIEWER_TOKEN, "COLUMNS": "200"})
    shown = subprocess.run(
        [sys.executable, "-m", "orchestrator", "sagas", "show", saga_id],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    return shown.stdout + shown.stderr


def test_card_numbers_are_nowhere_in_clear(system: System) -> None:
    sku = new_sku(system, 10)
    completed, unshippable = new_card(), new_card()
    cards = {
        "completed": (completed, order(sku, card=completed)),
        "compensated": (DECLINED_CARD, order(sku, card=DECLINED_CARD)),
        "unshippable": (unshippable, order(sku, card=unshippable, country="AQ")),
    }
    answers: list[bytes] = []
    sagas: dict[str, str] = {}
    for name, (_, saga_input) in cards.items():
        started = system.api.post("/sagas", json={"type": "order", "input": saga_input})
        assert started.status_code == 202, started.text
        answers.append(started.content)
        sagas[name] = started.json()["id"]
    finals = {name: system.wait_final(saga_id) for name, saga_id in sagas.items()}
    assert [s["status"] for s in finals.values()] == ["completed", "compensated", "compensated"]
    invalid = system.api.post(
        "/sagas",
        json={"type": "order", "input": {**cards["completed"][1], "card": completed + "x"}},
    )
    assert invalid.status_code == 422
    answers.append(invalid.content)

    pages: dict[str, bytes] = {}
    browser = signed_in(system)
    for name, saga_id in sagas.items():
        for client, path in (
            (system.api, f"/sagas/{saga_id}"),
            (system.api, f"/sagas/{saga_id}/timeline"),
            (browser, f"/ui/sagas/{saga_id}"),
        ):
            got = client.get(path)
            assert got.status_code == 200, (path, got.text)
            pages[f"{name} {path}"] = got.content
        pages[f"{name} cli"] = cli_show(system, saga_id)
    for client, path in (
        (system.api, "/sagas?limit=500"),
        (system.api, "/sagas/stats"),
        (browser, "/ui"),
    ):
        got = client.get(path)
        assert got.status_code == 200, (path, got.text)
        pages[path] = got.content
    browser.close()
    pages["api answers"] = b"".join(answers)

    places = {
        "pg_dump": pg_dump(system),
        **{f"topic {t}": data for t, data in asyncio.run(_topic_bytes(system)).items()},
        **{f"log {p.name}": p.read_bytes() for p in sorted(Path(system.workdir).glob("*.log"))},
        **pages,
    }
    # each kind of place holds the sagas: the search looks where the cards would be
    assert all(saga_id.encode() in places["pg_dump"] for saga_id in sagas.values())
    assert any(name.endswith(".dlq") for name in places), "no dead letter topic searched"
    assert sagas["completed"].encode() in places[f"topic {system.namespace}.payment.commands"]
    logs = {
        n.removeprefix("log "): len(data) for n, data in places.items() if n.startswith("log ")
    }
    assert {"api.log", "worker.log", "payment.log"} <= logs.keys(), logs
    assert logs["worker.log"], logs
    assert logs["payment.log"], logs
    hits = [
        (card, place)
        for card, _ in cards.values()
        for place, data in places.items()
        if card.encode() in data
    ]
    assert hits == []
    for name, (card, _) in cards.items():
        detail = finals[name]
        assert detail["input"]["card"] == "*" * 12 + card[-4:], detail["input"]
        assert f"****{card[-4:]}".encode() in pages[f"{name} /ui/sagas/{sagas[name]}"]

    kept = system.scalar(
        "SELECT array_agg(card_last4) FROM payment.charge WHERE saga_id = ANY(%s::uuid[])",
        [sagas["completed"], sagas["unshippable"]],
    )
    assert sorted(kept) == sorted([completed[-4:], unshippable[-4:]])
