"""The system on the secured services (`deploy/local/services start --secure`): each process
with its own Kafka principal and PostgreSQL role, as the env files of that script say."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import UnknownTopicOrPartitionError

from orchestrator.settings import Settings
from orchestrator.transport.security import kafka_security
from participants import registry
from tests.e2e.system import OTHER_SENDERS, System, signing_keys

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "deploy" / "local" / "services"
SECURE_DIR = ROOT / ".local" / "secure"
ORDER_PARTICIPANTS = ["inventory", "payment", "shipping"]


def start_secured_services() -> None:
    """Start the secured pair (a no-op when it runs); skip, or fail under CI, when it cannot."""
    done = subprocess.run(
        [str(SERVICES), "start", "--secure"], capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        reason = f"the secured services did not start:\n{done.stderr[-3000:]}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def principal_env(name: str) -> dict[str, str]:
    """The SAGA_* settings the script wrote for a principal (admin, orchestrator, a
    participant)."""
    lines = (SECURE_DIR / f"{name}.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def in_database(url: str, database: str) -> str:
    """The URL naming another database, keeping its credentials and TLS parameters."""
    base, _, query = url.partition("?")
    return base.rsplit("/", 1)[0] + "/" + database + ("?" + query if query else "")


def settings_of(env: dict[str, str]) -> Settings:
    fields = {k.removeprefix("SAGA_").lower(): v for k, v in env.items()}
    return Settings(_env_file=None, **fields)


class SecuredSystem(System):
    """A `System` on the secured services: the test and its tools are the admin, the api
    and the worker the orchestrator, each participant itself. The ACLs cover one topic
    namespace, so the topics are the namespace's own, removed before and after."""

    def __init__(self, workdir: Path) -> None:
        admin = principal_env("admin")
        super().__init__(admin["SAGA_DATABASE_URL"].partition("?")[0], "unused", workdir)
        self.admin_env = admin
        self.admin_url = in_database(admin["SAGA_DATABASE_URL"], "postgres").replace(
            "postgresql+psycopg://", "postgresql://", 1
        )
        self.database_url = in_database(admin["SAGA_DATABASE_URL"], self.db_name)
        self.kafka = admin["SAGA_KAFKA_BOOTSTRAP_SERVERS"]
        self.namespace = admin["SAGA_TOPIC_NAMESPACE"]
        self.env.update(admin | {"SAGA_SIGNING_KEYS": self.with_unsecured_senders(admin)})
        self.env["SAGA_DATABASE_URL"] = self.database_url
        for process, principal in [
            ("api", "orchestrator"),
            ("worker", "orchestrator"),
            *((p, p) for p in ORDER_PARTICIPANTS),
        ]:
            self.extra_env[process] = self.principal(principal)

    def principal(self, name: str) -> dict[str, str]:
        env = principal_env(name)
        env["SAGA_DATABASE_URL"] = in_database(env["SAGA_DATABASE_URL"], self.db_name)
        if name == "orchestrator":
            env["SAGA_SIGNING_KEYS"] = self.with_unsecured_senders(env)
        return env

    @staticmethod
    def with_unsecured_senders(env: dict[str, str]) -> str:
        """The script's keys, and the test keys of the participants the sagas name that run
        without a principal of their own here: the worker must be able to verify them all."""
        secured = set(ORDER_PARTICIPANTS)
        others = [p for p in [*registry.shipped_names(), *OTHER_SENDERS] if p not in secured]
        return env["SAGA_SIGNING_KEYS"] + "," + signing_keys(others)

    def create_database(self) -> None:
        super().create_database()
        subprocess.run(
            [str(SERVICES), "grants", "--secure", self.db_name], check=True, capture_output=True
        )
        self.delete_topics()
        subprocess.run(
            [sys.executable, "-m", "orchestrator", "topics"],
            env=self.env,
            check=True,
            capture_output=True,
        )

    def delete_topics(self) -> None:
        settings = settings_of(self.admin_env)

        async def delete() -> None:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self.kafka.split(","), **kafka_security(settings)
            )
            await admin.start()
            try:
                mine = [t for t in await admin.list_topics() if t.startswith(self.namespace + ".")]
                if mine:
                    await admin.delete_topics(mine)
                    await _until_gone(admin, set(mine))
            finally:
                await admin.close()

        asyncio.run(delete())


async def _until_gone(admin: AIOKafkaAdminClient, topics: set[str]) -> None:
    for _ in range(100):
        if not topics & set(await admin.list_topics()):
            return
        await asyncio.sleep(0.1)
    raise UnknownTopicOrPartitionError(f"topics still listed after deletion: {topics}")


def kafka_options(name: str) -> dict[str, Any]:
    """aiokafka keyword arguments logging in as a principal."""
    env = principal_env(name)
    return {
        "bootstrap_servers": env["SAGA_KAFKA_BOOTSTRAP_SERVERS"].split(","),
        **kafka_security(settings_of(env)),
    }
