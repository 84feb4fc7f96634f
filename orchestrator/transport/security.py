"""How every Kafka client of the project reaches the brokers: TLS and SASL from the settings."""

from __future__ import annotations

from typing import Any

from aiokafka.helpers import create_ssl_context

from orchestrator.settings import Settings


def kafka_security(settings: Settings) -> dict[str, Any]:
    """The aiokafka keyword arguments of the configured security protocol (none for
    PLAINTEXT): the same for producers, consumers and the admin client."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {
        "security_protocol": protocol,
        # the hostname is checked against the broker's certificate
        "ssl_context": create_ssl_context(
            cafile=settings.kafka_ssl_cafile or None,
            certfile=settings.kafka_ssl_certfile or None,
            keyfile=settings.kafka_ssl_keyfile or None,
        ),
    }
    if protocol == "SASL_SSL":
        options |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_username,
            "sasl_plain_password": settings.kafka_password,
        }
    return options
