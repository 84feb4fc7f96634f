"""The whole system as OS processes on a database and topic namespace of its own."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
from aiokafka.admin import AIOKafkaAdminClient

from orchestrator import signing
from participants import registry
from tests.schemas import migrate_all

FINAL = {"completed", "compensated", "failed"}
OPERATOR_TOKEN = "operator-token-for-tests"
VIEWER_TOKEN = "viewer-token-for-tests"
T = TypeVar("T")
# The participants the tests' sagas name, beyond the shipped ones; `nobody` never runs.
OTHER_SENDERS = ["wallet", "bank", "nobody"]
# Payment's commands are signed with the orchestrator's key for payment alone; the others'
# with the orchestrator's own key.
SCOPED = {"payment"}


def signing_key(owner: str) -> bytes:
    return hashlib.sha256(f"test signing key of {owner}".encode()).digest()


def key_id(owner: str) -> str:
    return "t-" + owner.replace(">", "-to-")


def signing_keys(owners: list[str]) -> str:
    """SAGA_SIGNING_KEYS holding the test keys of `owners`."""
    return ",".join(f"{key_id(o)}={o}:{base64.b64encode(signing_key(o)).decode()}" for o in owners)


def orchestrator_key_for(participant: str) -> str:
    if participant in SCOPED:
        return signing.scoped(signing.ORCHESTRATOR, participant)
    return signing.ORCHESTRATOR


def signature(value: bytes, owner: str) -> tuple[str, bytes]:
    """The `signature` header `owner` puts on a record of this value."""
    digest = hmac.new(signing_key(owner), value, hashlib.sha256).hexdigest()
    return signing.HEADER, f"{key_id(owner)}:{digest}".encode()


def wait_for(
    probe: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 0.1
) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class System:
    """api + worker + three participants, started as the user would start them."""

    def __init__(
        self, database_url: str, kafka: str, workdir: Path, definitions: str = "tests.e2e.sagas"
    ) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.admin_url = _plain(database_url)
        self.db_name = f"saga_test_{suffix}"
        self.database_url = database_url.rsplit("/", 1)[0] + "/" + self.db_name
        self.kafka = kafka
        self.namespace = f"t{suffix}"
        self.port = free_port()
        self.worker_metrics_port = free_port()
        self.workdir = workdir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.commands: dict[str, tuple[str, ...]] = {}
        self.extra_env: dict[str, dict[str, str]] = {}
        self.env = {
            **os.environ,
            "SAGA_DATABASE_URL": self.database_url,
            "SAGA_KAFKA_BOOTSTRAP_SERVERS": kafka,
            "SAGA_TOPIC_NAMESPACE": self.namespace,
            "SAGA_TOPIC_PARTITIONS": "4",
            "SAGA_API_PORT": str(self.port),
            "SAGA_WORKER_METRICS_PORT": str(self.worker_metrics_port),
            "SAGA_LOG_FORMAT": "json",
            "SAGA_DEFINITIONS": definitions,
            "SAGA_OPERATOR_TOKENS": f"tester:{OPERATOR_TOKEN}",
            "SAGA_VIEWER_TOKENS": f"watcher:{VIEWER_TOKEN}",
            # two keys, sealing with the second: the first stays readable, as after a rotation
            "SAGA_DATA_KEYS": "e2e-1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=,"
            "e2e-2:ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM=",
            "SAGA_DATA_KEY_IDS": "payment=e2e-2",
            # the orchestrator's processes: every sender's key; a participant gets its own
            # and the orchestrator's key for it, and nothing else (see `start`)
            "SAGA_SIGNING_KEYS": signing_keys(
                [
                    signing.ORCHESTRATOR,
                    *(orchestrator_key_for(p) for p in SCOPED),
                    *registry.shipped_names(),
                    *OTHER_SENDERS,
                ]
            ),
            "PYTHONUNBUFFERED": "1",
        }
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = httpx.Client(
            base_url=self.url,
            timeout=10,
            headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
        )

    # -- lifecycle -------------------------------------------------------------------------

    def create_database(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        migrate_all(self.database_url)

    def drop_database(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        args = args or self.commands[name]
        self.commands[name] = args
        if env is not None:
            self.extra_env[name] = env
        if args[:2] == ("participants", "worker"):
            participant = args[2]
            own = signing_keys([participant, orchestrator_key_for(participant)])
            self.extra_env[name] = {"SAGA_SIGNING_KEYS": own, **self.extra_env.get(name, {})}
        with (self.workdir / f"{name}.log").open("ab") as log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", *args],
                # each process a static group member under its own name, kept on restarts
                env={"SAGA_INSTANCE_ID": name, **self.env, **self.extra_env.get(name, {})},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def start_all(self, participants: list[str] | None = None) -> None:
        self.start("api", "orchestrator", "api")
        self.start("worker", "orchestrator", "worker")
        for participant in registry.shipped_names() if participants is None else participants:
            self.start(participant, "participants", "worker", participant)
        wait_for(self._api_healthy, 30, "the api to answer /readyz")
        wait_for(self._worker_ready, 60, "the worker to join its consumer group")

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout_s: float = 15) -> None:
        process = self.processes.pop(name)
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def kill(self, name: str) -> None:
        """SIGKILL: no clean-up, no offset commit, no goodbye to the consumer group."""
        self.stop(name, signal.SIGKILL)

    def stop_all(self, grace_s: float = 15) -> None:
        """SIGTERM to every process at once, SIGKILL to those still running after the grace."""
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + grace_s
        for process in self.processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
        self.api.close()

    @contextmanager
    def running(self, participants: list[str] | None = None) -> Iterator[System]:
        """The whole system on a database and topics of its own, removed afterwards."""
        self.create_database()
        try:
            self.start_all(participants)
            yield self
        finally:
            self.stop_all()
            self.delete_topics()
            self.drop_database()

    def delete_topics(self) -> None:
        async def delete() -> None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka.split(","))
            await admin.start()
            try:
                mine = [t for t in await admin.list_topics() if t.startswith(self.namespace + ".")]
                if mine:
                    await admin.delete_topics(mine)
            finally:
                await admin.close()

        asyncio.run(delete())

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name} ---\n" + p.read_text(errors="replace")[-4000:]
            for p in sorted(self.workdir.glob("*.log"))
        )

    def _worker_ready(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.worker_metrics_port}/readyz"
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def _api_healthy(self) -> bool:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.logs()}")
        try:
            return self.api.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    # -- what a user does and checks -------------------------------------------------------

    def start_saga(
        self, saga_input: dict[str, Any], saga_type: str = "order", version: int | None = None
    ) -> str:
        body = {"type": saga_type, "input": saga_input, "version": version}
        response = self.api.post("/sagas", json=body)
        assert response.status_code == 202, response.text
        saga_id: str = response.json()["id"]
        return saga_id

    def saga(self, saga_id: str) -> dict[str, Any]:
        response = self.api.get(f"/sagas/{saga_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait_timeline(
        self, saga_id: str, kind: str, step: str | None = None, timeout_s: float = 60
    ) -> dict[str, Any]:
        def seen() -> dict[str, Any] | None:
            saga = self.saga(saga_id)
            hit = any(e["kind"] == kind and step in (None, e["step"]) for e in saga["timeline"])
            return saga if hit else None

        try:
            return wait_for(seen, timeout_s, f"{kind} of {step or 'the saga'}")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.saga(saga_id)}\n{self.logs()}") from None

    def wait_final(self, saga_id: str, timeout_s: float = 60) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            saga = self.saga(saga_id)
            return saga if saga["status"] in FINAL else None

        try:
            return wait_for(final, timeout_s, f"saga {saga_id} to finish", interval_s=0.1)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.saga(saga_id)}\n{self.logs()}") from None

    @contextmanager
    def sql(self) -> Iterator[psycopg.Connection[Any]]:
        with psycopg.connect(_plain(self.database_url), autocommit=True) as conn:
            yield conn

    def scalar(self, query: str, *params: Any) -> Any:
        with self.sql() as conn:
            row = conn.execute(query, params).fetchone()
            return row[0] if row else None

    def restock(self, sku: str, quantity: int) -> None:
        subprocess.run(
            [sys.executable, "-m", "participants", "inventory", "restock", sku, str(quantity)],
            env=self.env,
            check=True,
            capture_output=True,
        )


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)
