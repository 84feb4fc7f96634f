"""The system on a three-node Kafka cluster (`SAGA_KAFKA_BROKERS=3 deploy/local/services`):
topics replicated three times with min.insync.replicas=2, and order sagas that all complete,
each charged once, while one broker is down."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.conftest import service_urls
from tests.e2e.cluster import Cluster, three_brokers
from tests.e2e.orders import new_sku, order
from tests.e2e.system import System

pytestmark = pytest.mark.e2e

ORDER_PARTICIPANTS = ["inventory", "payment", "shipping"]
DYNAMIC_TOPIC_CONFIG = 1  # describe_configs' config_source of a topic's own setting


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with three_brokers(tmp_path_factory.mktemp("kafka3")) as cluster:
        yield cluster


def topic_layout(system: System) -> dict[str, dict[str, Any]]:
    """Per topic of the system's namespace: its replica lists and its own min.insync.replicas."""

    async def describe() -> dict[str, dict[str, Any]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=system.kafka.split(","))
        await admin.start()
        try:
            names = sorted(t for t in await admin.list_topics() if t.startswith(system.namespace))
            layout: dict[str, dict[str, Any]] = {
                t["topic"]: {"partitions": t["partitions"]}
                for t in await admin.describe_topics(names)
            }
            resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
            for response in await admin.describe_configs(resources):
                for resource in response.to_object()["resources"]:
                    entries = {e["config_names"]: e for e in resource["config_entries"]}
                    layout[resource["resource_name"]]["min_isr"] = entries["min.insync.replicas"]
            return layout
        finally:
            await admin.close()

    return asyncio.run(describe())


def captured_charges(system: System, saga_id: str) -> int:
    n: int = system.scalar(
        "SELECT count(*) FROM payment.charge WHERE saga_id = %s AND status = 'captured'", saga_id
    )
    return n


def assert_completed_once(system: System, saga_ids: list[str]) -> None:
    for saga_id in saga_ids:
        saga = system.wait_final(saga_id, timeout_s=90)
        assert saga["status"] == "completed", saga
        assert captured_charges(system, saga_id) == 1, saga


def test_orders_complete_and_charge_once_while_a_broker_is_down(
    cluster: Cluster, tmp_path: Path
) -> None:
    database_url, _ = service_urls()
    system = System(database_url, cluster.bootstrap, tmp_path)
    system.env["SAGA_TOPIC_REPLICATION"] = "3"
    with system.running(ORDER_PARTICIPANTS):
        layout = topic_layout(system)
        assert f"{system.namespace}.replies" in layout
        assert f"{system.namespace}.replies.dlq" in layout
        for topic, described in layout.items():
            assert {len(p["replicas"]) for p in described["partitions"]} == {3}, topic
            min_isr = described["min_isr"]
            assert (min_isr["config_value"], min_isr["config_source"]) == (
                "2",
                DYNAMIC_TOPIC_CONFIG,
            ), topic
        # the broker leading most of the system's partitions goes down
        leaders = Counter(p["leader"] for d in layout.values() for p in d["partitions"])
        broker = leaders.most_common(1)[0][0]

        sku = new_sku(system, 1000)
        before = [system.start_saga(order(sku)) for _ in range(10)]
        stopping = subprocess.Popen(
            cluster.command("stop-broker", str(broker)),
            env=cluster.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        during = []
        while stopping.poll() is None:
            during.append(system.start_saga(order(sku)))
            time.sleep(0.1)
        output, _ = stopping.communicate()
        assert stopping.returncode == 0, output
        # while it is down: the two others hold every partition's in-sync replicas
        down = []
        for _ in range(15):
            down.append(system.start_saga(order(sku)))
            time.sleep(0.2)
        assert_completed_once(system, before + during + down)

        cluster.check("start-broker", str(broker))
        after = [system.start_saga(order(sku)) for _ in range(5)]
        assert_completed_once(system, after)
