"""Shared fixtures: the real PostgreSQL and Kafka the tests run against.

The servers come from SAGA_DATABASE_URL and SAGA_KAFKA_BOOTSTRAP_SERVERS, or from the `.env`
that `make services` writes. Without them the tests that need them are skipped locally and
fail under CI: never a silent green.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _dotenv() -> dict[str, str]:
    path = ROOT / ".env"
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if not k.startswith("#")}


def service_urls() -> tuple[str, str]:
    env = {**_dotenv(), **os.environ}
    database = env.get("SAGA_DATABASE_URL")
    kafka = env.get("SAGA_KAFKA_BOOTSTRAP_SERVERS")
    if not (database and kafka):
        reason = "PostgreSQL and Kafka are not configured: run `make services`"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return database, kafka
