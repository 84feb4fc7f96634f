"""The conformance kit against running participants, only through Kafka: every shipped
participant keeps every rule; a hand-written one keeps them too, and fails, naming the rule,
as soon as it breaks one."""

from __future__ import annotations

import asyncio
import functools
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from rich.console import Console

from orchestrator import conformance
from orchestrator.settings import Settings
from participants import registry
from tests.conformance.broken import BREAKS
from tests.conftest import service_urls
from tests.e2e.system import System, free_port, wait_for

pytestmark = pytest.mark.e2e

SHIPPED = registry.shipped_names()
# each broken participant a car service in a namespace of its own; "" keeps every rule
CARS = ["", "duplicate", "tombstone", "version", "expired", "unsigned"]
# the rules each break violates, and no other
VIOLATED = {
    "duplicate": {"duplicate-answered-from-store", "repeated-compensation-answered-from-store"},
    "tombstone": {"tombstone-refuses-late-action"},
    "version": {"unknown-version-refused"},
    "expired": {"expired-compensation-not-applied"},
    "unsigned": {"reply-signed-by-participant"},
}


def car_namespace(system: System, broken: str) -> str:
    return f"{system.namespace}-car-{broken or 'kept'}"


@pytest.fixture(scope="module")
def participants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """The shipped participants and the hand-written cars, without api or worker: the kit
    plays the orchestrator."""
    database_url, kafka = service_urls()
    system = System(database_url, kafka, tmp_path_factory.mktemp("conformance"))
    system.create_database()
    try:
        system.restock("SKU-RED", 1_000_000)  # the example order's item
        ports = {name: free_port() for name in SHIPPED}
        for name in SHIPPED:
            system.start(name, "participants", "worker", name, "--port", str(ports[name]))
        for broken in CARS:
            env = {"SAGA_TOPIC_NAMESPACE": car_namespace(system, broken)}
            system.start(
                f"car-{broken or 'kept'}",
                "tests.conformance.broken",
                env={**env, "CONFORMANCE_BREAK": broken},
            )
        for name, port in ports.items():
            wait_for(functools.partial(_ready, system, port), 60, f"{name} to be ready")
        cars = {f"{car_namespace(system, b)}.car.commands.dlq" for b in CARS}
        wait_for(lambda: cars <= set(_topics(system)), 60, "the cars to create their topics")
        yield system
    finally:
        system.stop_all()
        system.delete_topics()
        _delete_car_topics(system)
        system.drop_database()


def _ready(system: System, port: int) -> bool:
    for name, process in system.processes.items():
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{system.logs()}")
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _topics(system: System) -> list[str]:
    async def listed() -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=system.kafka.split(","))
        await admin.start()
        try:
            return list(await admin.list_topics())
        finally:
            await admin.close()

    return asyncio.run(listed())


def _delete_car_topics(system: System) -> None:
    async def delete() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=system.kafka.split(","))
        await admin.start()
        try:
            prefix = f"{system.namespace}-car-"
            mine = [t for t in await admin.list_topics() if t.startswith(prefix)]
            if mine:
                await admin.delete_topics(mine)
        finally:
            await admin.close()

    asyncio.run(delete())


def settings_of(system: System, namespace: str | None = None) -> Settings:
    """What the kit's user sets: the broker, the namespace, the orchestrator's keys."""
    return Settings(
        database_url=system.database_url,
        kafka_bootstrap_servers=system.kafka,
        topic_namespace=namespace or system.namespace,
        signing_keys=system.env["SAGA_SIGNING_KEYS"],
        data_keys=system.env["SAGA_DATA_KEYS"],
        data_key_ids=system.env["SAGA_DATA_KEY_IDS"],
        definitions="",
    )


def failures(checks: list[conformance.Check]) -> set[str]:
    return {c.rule for c in checks if c.status is conformance.Status.FAIL}


def table(checks: list[conformance.Check]) -> str:
    """The report as the CLI prints it, for an assertion's message."""
    console = Console(record=True, width=200, file=io.StringIO())
    conformance.report(checks, console)
    return console.export_text()


@pytest.mark.parametrize("name", SHIPPED)
async def test_a_shipped_participant_keeps_every_rule(participants: System, name: str) -> None:
    checks = await conformance.check(settings_of(participants), name, timeout_s=30)

    assert failures(checks) == set(), table(checks) + participants.logs()
    assert [c.rule for c in checks] == list(conformance.RULES)


async def test_a_participant_written_by_hand_keeps_every_rule(participants: System) -> None:
    checks = await conformance.check(
        settings_of(participants, car_namespace(participants, "")), "car"
    )

    assert failures(checks) == set(), table(checks) + participants.logs()


@pytest.mark.parametrize("broken", BREAKS)
async def test_a_broken_participant_fails_naming_the_rule(
    participants: System, broken: str
) -> None:
    namespace = car_namespace(participants, broken)

    checks = await conformance.check(settings_of(participants, namespace), "car", timeout_s=10)

    assert failures(checks) == VIOLATED[broken], table(checks)


def test_the_cli_prints_the_table_and_exits_0_only_when_every_rule_is_kept(
    participants: System, tmp_path: Path
) -> None:
    """With the broker and namespace as options and no database anywhere, as a participant's
    author without the orchestrator's PostgreSQL runs it."""
    (tmp_path / "empty.env").write_text("")
    unset = ("SAGA_DATABASE_URL", "SAGA_KAFKA_BOOTSTRAP_SERVERS", "SAGA_TOPIC_NAMESPACE")
    env = {k: v for k, v in participants.env.items() if k not in unset}
    env |= {"SAGA_ENV_FILE": str(tmp_path / "empty.env"), "COLUMNS": "200"}

    def run(participant: str, namespace: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "orchestrator",
                "conformance",
                "--participant",
                participant,
                "--kafka",
                participants.kafka,
                "--namespace",
                namespace,
                "--timeout",
                "10",
            ],
            env=env,
            capture_output=True,
            text=True,
        )

    kept = run("flight", participants.namespace)
    broken = run("car", car_namespace(participants, "tombstone"))

    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "works-after-poison" in kept.stdout
    assert "FAIL" not in kept.stdout
    assert broken.returncode == 1, broken.stdout + broken.stderr
    row = next(
        line for line in broken.stdout.splitlines() if "tombstone-refuses-late-action" in line
    )
    assert "FAIL" in row
