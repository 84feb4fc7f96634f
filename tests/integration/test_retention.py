"""What is kept only as long as it can be needed: processed replies and a participant's stored
replies past the topics' retention, finished sagas past theirs (archived, or dropped)."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.housekeeping import Housekeeping, Purge
from orchestrator.settings import Settings
from orchestrator.store.retention import SqlRetention
from orchestrator.store.unit_of_work import create_engine
from participants import registry
from participants.kit.participant import CommandProcessor
from tests.fakes import CollectingPublisher
from tests.schemas import migrate_all

DAY_S = 86_400


@pytest.fixture
async def engine(empty_database: str) -> AsyncIterator[AsyncEngine]:
    await asyncio.to_thread(migrate_all, empty_database)
    engine = create_engine(empty_database, 2)
    yield engine
    await engine.dispose()


def sql(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url.replace("+psycopg", "", 1), autocommit=True)


def saga(url: str, status: str, days_ago: float) -> str:
    """A saga with one step and two timeline entries, last updated `days_ago`."""
    saga_id = str(uuid.uuid4())
    with sql(url) as conn:
        conn.execute(
            "INSERT INTO saga (id, type, definition_version, status, input, context, version, "
            "updated_at) VALUES (%s, 'order', 1, %s, '{\"orderId\": \"o-1\"}', '{}', 3, "
            "now() - make_interval(secs => %s))",
            (saga_id, status, days_ago * DAY_S),
        )
        conn.execute(
            "INSERT INTO saga_step (saga_id, name, position, status, attempt, "
            "compensation_attempt) VALUES (%s, 'reserve_inventory', 0, 'succeeded', 1, 0)",
            (saga_id,),
        )
        for kind in ("saga_started", "saga_completed"):
            conn.execute(
                "INSERT INTO saga_timeline (saga_id, at, kind, detail) VALUES (%s, now(), %s, "
                "'{}')",
                (saga_id, kind),
            )
    return saga_id


def left(url: str, table: str, column: str = "saga_id") -> set[str]:
    with sql(url) as conn:
        return {r[0] for r in conn.execute(f"SELECT DISTINCT {column}::text FROM {table}")}


async def test_processed_replies_are_forgotten_after_the_retention_a_batch_at_a_time(
    engine: AsyncEngine, empty_database: str
) -> None:
    old, recent = [str(uuid.uuid4()) for _ in range(5)], str(uuid.uuid4())
    with sql(empty_database) as conn:
        for message_id, days in [*((m, 9) for m in old), (recent, 1)]:
            conn.execute(
                "INSERT INTO processed_message (message_id, saga_id, processed_at) "
                "VALUES (%s, %s, now() - make_interval(secs => %s))",
                (message_id, str(uuid.uuid4()), days * DAY_S),
            )
    retention = SqlRetention(engine)
    purge = Purge("processed_message", lambda n: retention.purge_processed(8 * DAY_S, n), 2)

    removed = await Housekeeping([purge], 60).once()

    assert removed == {"processed_message": 5}
    assert left(empty_database, "processed_message", "message_id") == {recent}


async def test_a_participant_forgets_stored_replies_after_the_retention(
    engine: AsyncEngine, empty_database: str
) -> None:
    settings = Settings(database_url=empty_database, kafka_bootstrap_servers="127.0.0.1:9")
    inventory = registry.participant("inventory", settings)
    processor = CommandProcessor(inventory, engine, CollectingPublisher(), "replies")  # type: ignore[arg-type]
    with sql(empty_database) as conn:
        for days in (9, 9, 1):
            conn.execute(
                "INSERT INTO inventory.inbox (message_id, saga_id, step, command_type, reply, "
                "received_at) VALUES (%s, %s, 's', 'inventory.reserve', '\\x7b7d', "
                "now() - make_interval(secs => %s))",
                (str(uuid.uuid4()), str(uuid.uuid4()), days * DAY_S),
            )

    assert await processor.purge_inbox(8 * DAY_S, 1000) == 2
    with sql(empty_database) as conn:
        assert conn.execute("SELECT count(*) FROM inventory.inbox").fetchone() == (1,)


def archive(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SAGA_DATABASE_URL": url,
        "SAGA_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "SAGA_ENV_FILE": os.devnull,
    }
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "archive", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def archived(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt") as lines:
        return [json.loads(line) for line in lines]


async def test_finished_sagas_are_archived_with_their_steps_and_timeline_then_deleted(
    engine: AsyncEngine, empty_database: str, tmp_path: Path
) -> None:
    url = empty_database
    completed = [saga(url, "completed", 40) for _ in range(3)]
    compensated = saga(url, "compensated", 31)
    keep = [
        saga(url, "completed", 5),  # not old enough
        saga(url, "running", 40),  # not finished
        saga(url, "compensating", 40),
    ]
    failed = saga(url, "failed", 40)  # waits on an operator: only with --include-failed
    target = tmp_path / "sagas.jsonl.gz"

    done = archive(url, "--older-than", "30d", "--to", str(target), "--batch", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"archived 4 saga(s) to {target}"

    lines = archived(target)
    assert sorted(s["id"] for s in lines) == sorted([*completed, compensated])
    assert all(s["input"] == {"orderId": "o-1"} for s in lines)
    assert all([st["name"] for st in s["steps"]] == ["reserve_inventory"] for s in lines)
    kinds = [[e["kind"] for e in s["timeline"]] for s in lines]
    assert kinds == [["saga_started", "saga_completed"]] * 4
    assert left(url, "saga", "id") == {*keep, failed}
    assert left(url, "saga_step") == left(url, "saga_timeline") == {*keep, failed}

    again = archive(url, "--older-than", "30d", "--to", str(target), "--include-failed")
    assert again.stdout.strip() == f"archived 1 saga(s) to {target}"
    assert [s["id"] for s in archived(target)][-1] == failed  # appended: both runs readable
    assert len(archived(target)) == 5


async def test_a_failed_copy_deletes_nothing_and_drop_needs_no_file(
    engine: AsyncEngine, empty_database: str
) -> None:
    url = empty_database
    old = [saga(url, "completed", 40) for _ in range(2)]
    retention = SqlRetention(engine)

    def full_disk(sagas: Sequence[dict[str, Any]]) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        await retention.remove_finished(30 * DAY_S, 10, full_disk)
    assert left(url, "saga", "id") == set(old)

    dropped = archive(url, "--older-than", "30d", "--drop")
    assert dropped.stdout.strip() == "dropped 2 saga(s)"
    assert left(url, "saga", "id") == left(url, "saga_timeline") == set()


def test_archive_refuses_a_bad_age_or_no_destination(empty_database: str) -> None:
    bad_age = archive(empty_database, "--older-than", "30 days", "--drop")
    assert "--older-than: invalid duration '30 days'" in bad_age.stderr
    assert "--to" in archive(empty_database, "--older-than", "30d").stderr
    no_age = archive(empty_database, "--drop")
    assert "give --older-than, or set SAGA_FINISHED_RETENTION_S" in no_age.stderr


def test_the_dedup_horizon_must_outlast_the_topics() -> None:
    with pytest.raises(ValueError, match="longer than SAGA_TOPIC_RETENTION_S"):
        Settings(
            database_url="postgresql://x",
            kafka_bootstrap_servers="k:1",
            topic_retention_s=7 * DAY_S,
            dedup_retention_s=7 * DAY_S,
        )
