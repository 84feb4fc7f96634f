"""How the SAGA_KAFKA_* security settings become the clients' options."""

from __future__ import annotations

import ssl
from typing import Any

import pytest

from orchestrator.settings import SettingsError, load_settings
from orchestrator.transport.security import kafka_security

BASE = {
    "SAGA_DATABASE_URL": "postgresql://u:p@db.example:5432/x",
    "SAGA_KAFKA_BOOTSTRAP_SERVERS": "kafka.example:9093",
}


def settings_from(monkeypatch: pytest.MonkeyPatch, **env: str) -> Any:
    monkeypatch.setenv("SAGA_ENV_FILE", "/nonexistent/.env")
    for name, value in (BASE | env).items():
        monkeypatch.setenv(name, value)
    return load_settings()


def test_plaintext_adds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert kafka_security(settings_from(monkeypatch)) == {}


def test_sasl_ssl_logs_in_over_tls_that_checks_the_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_from(
        monkeypatch,
        SAGA_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        SAGA_KAFKA_USERNAME="payment",
        SAGA_KAFKA_PASSWORD="s3cret",
    )

    options = kafka_security(settings)

    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == (
        "payment",
        "s3cret",
    )
    context = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert "s3cret" not in repr(settings)


def test_ssl_has_no_sasl_login(monkeypatch: pytest.MonkeyPatch) -> None:
    options = kafka_security(settings_from(monkeypatch, SAGA_KAFKA_SECURITY_PROTOCOL="SSL"))

    assert options["security_protocol"] == "SSL"
    assert "sasl_mechanism" not in options


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SAGA_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "SAGA_KAFKA_PASSWORD"),
        (
            {"SAGA_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "SAGA_KAFKA_PASSWORD": "x"},
            "SAGA_KAFKA_PASSWORD",
        ),
        ({"SAGA_KAFKA_SSL_CERTFILE": "client.pem"}, "SAGA_KAFKA_SSL_KEYFILE"),
        ({"SAGA_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}, "SAGA_KAFKA_SECURITY_PROTOCOL"),
        ({"SAGA_KAFKA_SASL_MECHANISM": "GSSAPI"}, "SAGA_KAFKA_SASL_MECHANISM"),
    ],
)
def test_incomplete_security_settings_are_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    with pytest.raises(SettingsError, match=named):
        settings_from(monkeypatch, **env)


def test_a_missing_ca_file_fails_when_the_clients_are_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_from(
        monkeypatch,
        SAGA_KAFKA_SECURITY_PROTOCOL="SSL",
        SAGA_KAFKA_SSL_CAFILE="/nonexistent/ca.pem",
    )

    with pytest.raises(FileNotFoundError):
        kafka_security(settings)
