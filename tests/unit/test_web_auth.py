"""Who may call the api: SAGA_INSECURE_DEV only on a loopback bind and without tokens."""

from __future__ import annotations

import os
from typing import Any

import pytest

from orchestrator.api.auth import Authenticator, Role
from orchestrator.settings import Settings, SettingsError


@pytest.fixture(autouse=True)
def _no_saga_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SAGA_"):
            monkeypatch.delenv(name)


def settings(**values: Any) -> Settings:
    return Settings(
        database_url="postgresql://u:p@db.example:5432/x",
        kafka_bootstrap_servers="kafka.example:9092",
        _env_file=None,
        **values,
    )


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_insecure_dev_serves_anonymous_operators_on_a_loopback_bind(host: str) -> None:
    authenticator = Authenticator(settings(insecure_dev=True, api_host=host))

    assert authenticator.insecure


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "api.example", ""])
def test_insecure_dev_refuses_to_start_on_any_other_bind(host: str) -> None:
    with pytest.raises(SettingsError, match="loopback"):
        Authenticator(settings(insecure_dev=True, api_host=host))


def test_insecure_dev_refuses_to_start_next_to_tokens() -> None:
    with pytest.raises(SettingsError, match="unset SAGA_INSECURE_DEV"):
        Authenticator(settings(insecure_dev=True, operator_tokens="ops:operator-token-1"))


def test_without_tokens_or_insecure_dev_the_api_refuses_to_start() -> None:
    with pytest.raises(SettingsError, match="SAGA_OPERATOR_TOKENS"):
        Authenticator(settings())


def test_tokens_name_their_principal_and_role() -> None:
    authenticator = Authenticator(
        settings(operator_tokens="ops:operator-token-1", viewer_tokens="viewer-token-2")
    )

    operator = authenticator.lookup("operator-token-1")
    viewer = authenticator.lookup("viewer-token-2")
    assert operator is not None
    assert (operator.name, operator.role) == ("ops", Role.OPERATOR)
    assert viewer is not None
    assert viewer.role == Role.VIEWER
    assert authenticator.lookup("operator-token-") is None
    assert not authenticator.insecure
