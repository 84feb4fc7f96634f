"""A three-node KRaft cluster beside the default services, for the tests that take brokers
down (`SAGA_KAFKA_BROKERS=3 deploy/local/services` with ports and a directory of its own)."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import service_urls

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "deploy" / "local" / "services"
NODES = 3
PORT_STEP = 10


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_base_port() -> int:
    """A client port p with p, p+1 (controller) and the same PORT_STEP and 2*PORT_STEP above
    free, below the ephemeral range (see the script) and away from the default services."""
    for _ in range(50):
        base = random.randrange(26000, 28900, 100) + random.randrange(0, 60, 4)
        ports = [base + n * PORT_STEP + c for n in range(NODES) for c in (0, 1)]
        if all(_port_free(p) for p in ports):
            return base
    pytest.skip("no free ports for a three-node Kafka cluster")


class Cluster:
    """Three KRaft nodes beside the default services: ports and a data directory of its own."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = _free_base_port()
        self.bootstrap = ",".join(f"127.0.0.1:{self.port + n * PORT_STEP}" for n in range(NODES))
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_")}
        self.env = env | {
            "SAGA_KAFKA_BROKERS": str(NODES),
            "SAGA_KAFKA_PORT": str(self.port),
            "SAGA_KAFKA_CONTROLLER_PORT": str(self.port + 1),
            "SAGA_KAFKA_PORT_STEP": str(PORT_STEP),
            "SAGA_KAFKA_CLUSTER_DIR": str(directory),
        }

    def command(self, *args: str) -> list[str]:
        return [str(SERVICES), *args]

    def run(self, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args), env=self.env, capture_output=True, text=True, timeout=timeout_s
        )

    def start(self) -> None:
        """Kafka only: the script's `start kafka` leaves PostgreSQL and .env alone."""
        done = self.run("start", "kafka", timeout_s=600)
        if done.returncode != 0:
            reason = f"the three-node Kafka cluster did not start:\n{done.stderr[-3000:]}"
            if os.environ.get("CI"):
                pytest.fail(reason)
            pytest.skip(reason)

    def check(self, *args: str) -> None:
        done = self.run(*args)
        assert done.returncode == 0, f"services {' '.join(args)}:\n{done.stdout}{done.stderr}"

    def stop(self) -> None:
        """SIGKILL every node: the data is thrown away, and a controlled shutdown of the
        last nodes of a cluster waits a minute for a quorum that is leaving too."""
        for node in range(1, NODES + 1):
            self.run("kill-broker", str(node))


@contextlib.contextmanager
def three_brokers(directory: Path) -> Iterator[Cluster]:
    service_urls()  # skips (or fails under CI) without the default PostgreSQL
    cluster = Cluster(directory)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.directory, ignore_errors=True)
