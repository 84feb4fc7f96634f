"""With SAGA_LOG_FORMAT=json every line a process writes is one JSON object: the libraries'
lines (uvicorn, aiokafka, faust) and an exception that ends the process included."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.conftest import service_urls
from tests.e2e.system import wait_for

pytestmark = pytest.mark.e2e

NOTHING_LISTENS = "127.0.0.1:1"


def _env(namespace: str, **overrides: str) -> dict[str, str]:
    database_url, kafka = service_urls()
    return {
        **os.environ,
        "SAGA_DATABASE_URL": database_url,
        "SAGA_KAFKA_BOOTSTRAP_SERVERS": kafka,
        "SAGA_TOPIC_NAMESPACE": namespace,
        "SAGA_TOPIC_PARTITIONS": "1",
        "SAGA_LOG_FORMAT": "json",
        "SAGA_LOG_LEVEL": "info",
        "SAGA_DEV_KEYS": "1",
        "PYTHONUNBUFFERED": "1",
        **overrides,
    }


def _start(args: list[str], env: dict[str, str], output: Path) -> subprocess.Popen[bytes]:
    with output.open("wb") as out:  # a file, not a pipe: a full pipe would stall the process
        return subprocess.Popen(
            [sys.executable, "-m", *args], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _stop(process: subprocess.Popen[bytes], after_s: float) -> None:
    try:
        process.wait(after_s)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _events(output: Path) -> list[dict[str, Any]]:
    """Each line as a JSON object; fails on the first line that is not one."""
    text = output.read_text(errors="replace")
    events = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            pytest.fail(f"a line that is not JSON: {line!r}\n--- output ---\n{text[-4000:]}")
        assert isinstance(event, dict), line
        assert {"event", "level", "timestamp"} <= event.keys(), line
        events.append(event)
    return events


def _delete_topics(namespace: str) -> None:
    async def delete() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=service_urls()[1].split(","))
        await admin.start()
        try:
            mine = [t for t in await admin.list_topics() if t.startswith(namespace + ".")]
            if mine:
                await admin.delete_topics(mine)
        finally:
            await admin.close()

    asyncio.run(delete())


def test_the_api_logs_json_when_its_port_is_taken(tmp_path: Path) -> None:
    output = tmp_path / "api.log"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = _env(
            f"t{uuid.uuid4().hex[:10]}",
            SAGA_API_HOST="127.0.0.1",
            SAGA_OPERATOR_TOKENS="tester:operator-token-for-tests",
        )
        process = _start(["orchestrator", "api", "--port", str(port)], env, output)
        _stop(process, after_s=60)

    assert process.returncode != 0
    events = _events(output)
    assert any(
        e.get("logger", "").startswith("uvicorn") and "address already in use" in e["event"]
        for e in events
    ), events


def test_a_worker_that_cannot_reach_kafka_logs_json(tmp_path: Path) -> None:
    output = tmp_path / "worker.log"
    env = _env(f"t{uuid.uuid4().hex[:10]}", SAGA_KAFKA_BOOTSTRAP_SERVERS=NOTHING_LISTENS)
    env.pop("SAGA_OPERATOR_TOKENS", None)

    process = _start(["participants", "worker", "inventory"], env, output)
    _stop(process, after_s=8)

    events = _events(output)
    assert any(e.get("logger", "").startswith("aiokafka") for e in events), events


def test_a_running_worker_logs_json_until_it_stops(tmp_path: Path) -> None:
    """The faust worker configures logging again when it starts; its lines, aiokafka's and
    those of the shutdown are JSON all the same. Debug, for many library lines."""
    output = tmp_path / "worker.log"
    namespace = f"t{uuid.uuid4().hex[:10]}"
    database_url, kafka = service_urls()
    env = _env(
        namespace,
        # the address where nothing listens makes aiokafka log errors as it bootstraps
        SAGA_KAFKA_BOOTSTRAP_SERVERS=f"{NOTHING_LISTENS},{kafka}",
        # no such database: the inbox purge fails with a warning and touches no one's rows
        SAGA_DATABASE_URL=database_url.rsplit("/", 1)[0] + f"/{namespace}_absent",
        SAGA_LOG_LEVEL="debug",
    )
    env.pop("SAGA_OPERATOR_TOKENS", None)

    process = _start(["participants", "worker", "inventory"], env, output)
    try:
        wait_for(
            lambda: process.poll() is not None or b'"consumer_started"' in output.read_bytes(),
            60,
            "the worker's consumer to start",
        )
        _stop(process, after_s=2)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        _delete_topics(namespace)

    events = _events(output)
    loggers = {e.get("logger", "") for e in events}
    assert any(e["event"] == "consumer_started" for e in events), events[-20:]
    assert any(name.startswith("faust") for name in loggers), loggers
    assert any(name.startswith("aiokafka") for name in loggers), loggers
