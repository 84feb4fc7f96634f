"""The assembled app without a database: /metrics' token and cache, the docs, the hosts."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import pytest

from orchestrator.api.app import create_app
from orchestrator.api.auth import Authenticator
from orchestrator.service import SagaService
from orchestrator.settings import Settings
from orchestrator.store.queries import SqlSagaReader

STATS: dict[str, Any] = {
    "by_status": {},
    "by_type": {},
    "oldest_running": None,
    "outbox_backlog": 0,
    "outbox_oldest_unpublished_at": None,
    "parked": 0,
    "outbox_parked": 0,
    "overdue": {"total": 0, "by_type": {}, "after_s": 60},
    "resolving": {"total": 0, "by_step": {}},
}


class StatsReader:
    def __init__(self) -> None:
        self.queries = 0

    async def stats(self) -> dict[str, Any]:
        self.queries += 1
        return STATS


def app_with(reader: StatsReader, metrics_token: str = "") -> Any:
    settings = Settings(
        database_url="postgresql://u:p@db.example:5432/x",
        kafka_bootstrap_servers="kafka.example:9092",
        operator_tokens="ops:operator-token-1",
        _env_file=None,
    )
    return create_app(
        cast(SagaService, object()),
        cast(SqlSagaReader, reader),
        Authenticator(settings),
        metrics_cache_s=60,
        metrics_token=metrics_token,
    )


@pytest.fixture(autouse=True)
def _no_saga_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SAGA_"):
            monkeypatch.delenv(name)


@pytest.fixture
def reader() -> StatsReader:
    return StatsReader()


@pytest.fixture
async def client(reader: StatsReader) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app_with(reader, metrics_token="scrape-token-1"))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        yield c


async def test_metrics_need_their_token_when_one_is_set(
    client: httpx.AsyncClient, reader: StatsReader
) -> None:
    missing = await client.get("/metrics")
    wrong = await client.get("/metrics", headers={"Authorization": "Bearer operator-token-1"})
    right = await client.get("/metrics", headers={"Authorization": "Bearer scrape-token-1"})

    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    assert "saga_outbox_backlog" in right.text
    assert reader.queries == 1


async def test_scrapes_share_the_cached_stats(
    client: httpx.AsyncClient, reader: StatsReader
) -> None:
    for _ in range(5):
        response = await client.get("/metrics", headers={"Authorization": "Bearer scrape-token-1"})
        assert response.status_code == 200

    assert reader.queries == 1


async def test_without_a_metrics_token_metrics_are_open(reader: StatsReader) -> None:
    transport = httpx.ASGITransport(app=app_with(reader))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        assert (await client.get("/metrics")).status_code == 200


async def test_docs_are_not_served_from_a_cdn(client: httpx.AsyncClient) -> None:
    assert (await client.get("/docs")).status_code == 404
    assert (await client.get("/openapi.json")).status_code == 200


async def test_a_request_for_another_host_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json", headers={"Host": "evil.example"})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "untrusted_host"
