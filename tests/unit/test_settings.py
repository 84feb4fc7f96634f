"""Which `.env` the commands read."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import settings as settings_module
from orchestrator.settings import env_file, load_settings


def test_the_nearest_env_file_up_from_the_current_directory_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(
        "SAGA_DATABASE_URL=postgresql://u:p@db.example:5432/x\n"
        "SAGA_KAFKA_BOOTSTRAP_SERVERS=kafka.example:9092\n"
    )
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    for name in ("SAGA_ENV_FILE", "SAGA_DATABASE_URL", "SAGA_KAFKA_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(name, raising=False)

    assert env_file() == tmp_path / ".env"
    assert load_settings().kafka_bootstrap_servers == "kafka.example:9092"


def test_saga_env_file_names_the_file_to_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    named = tmp_path / "elsewhere.env"
    named.write_text("SAGA_KAFKA_BOOTSTRAP_SERVERS=named.example:9092\n")
    monkeypatch.setenv("SAGA_ENV_FILE", str(named))
    monkeypatch.setenv("SAGA_DATABASE_URL", "postgresql://u:p@db.example:5432/x")
    monkeypatch.delenv("SAGA_KAFKA_BOOTSTRAP_SERVERS", raising=False)

    assert load_settings().kafka_bootstrap_servers == "named.example:9092"


def test_without_one_up_the_tree_the_project_roots_env_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SAGA_ENV_FILE", raising=False)
    root = Path(settings_module.__file__).resolve().parents[1]

    expected = root / ".env" if (root / ".env").is_file() else None
    assert env_file() == expected


def test_a_command_without_a_database_needs_no_database_url_and_opens_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "empty.env").write_text("")
    monkeypatch.setenv("SAGA_ENV_FILE", str(tmp_path / "empty.env"))
    monkeypatch.delenv("SAGA_DATABASE_URL", raising=False)
    monkeypatch.delenv("SAGA_KAFKA_BOOTSTRAP_SERVERS", raising=False)

    with pytest.raises(settings_module.SettingsError, match="SAGA_DATABASE_URL"):
        load_settings(kafka_bootstrap_servers="kafka.example:9092")
    loaded = load_settings(database=False, kafka_bootstrap_servers="kafka.example:9092")

    assert loaded.kafka_bootstrap_servers == "kafka.example:9092"
    assert loaded.database_url.endswith("no-database.invalid/unused")


def test_options_win_over_the_environment_and_are_validated_like_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "empty.env").write_text("")
    monkeypatch.setenv("SAGA_ENV_FILE", str(tmp_path / "empty.env"))
    monkeypatch.setenv("SAGA_DATABASE_URL", "postgresql://u:p@db.example:5432/x")
    monkeypatch.setenv("SAGA_KAFKA_BOOTSTRAP_SERVERS", "env.example:9092")
    monkeypatch.setenv("SAGA_TOPIC_NAMESPACE", "fromenv")

    given = load_settings(database=False, topic_namespace="given")
    assert (given.topic_namespace, given.kafka_bootstrap_servers) == ("given", "env.example:9092")
    assert given.database_url == "postgresql+psycopg://u:p@db.example:5432/x"
    with pytest.raises(settings_module.SettingsError, match="SAGA_TOPIC_NAMESPACE"):
        load_settings(database=False, topic_namespace="two words")
