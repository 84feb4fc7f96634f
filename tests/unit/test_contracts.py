import dataclasses
from datetime import UTC, datetime

import pytest

from orchestrator.saga import messages
from orchestrator.saga.contracts import (
    REQUIRED,
    Contracts,
    PayloadSchema,
    UnknownMessageVersionError,
)
from participants.contracts import CONTRACTS

V1 = PayloadSchema("thing.do", 1, {"id": REQUIRED})
V2 = PayloadSchema("thing.do", 2, {"id": REQUIRED, "colour": "blue"})


def message(version: int, **payload: object) -> messages.Message:
    m = messages.command(
        message_type="thing.do",
        saga_id=messages.new_id(),
        saga_type="t",
        step="s",
        attempt=1,
        payload=payload,
        now=datetime(2026, 1, 1, tzinfo=UTC),
        causation_id=None,
    )
    return dataclasses.replace(m, version=version)


def test_every_registered_message_version_is_backward_compatible() -> None:
    assert CONTRACTS.compatibility_problems() == []


def test_an_old_message_is_upcast_with_the_defaults() -> None:
    read = Contracts(V1, V2).read(message(1, id="a"), as_version=2)
    assert (read.version, dict(read.payload)) == (2, {"id": "a", "colour": "blue"})


def test_a_newer_message_is_read_tolerantly_by_an_older_reader() -> None:
    read = Contracts(V1, V2).read(message(2, id="a", colour="red"), as_version=1)
    assert (read.version, dict(read.payload)) == (1, {"id": "a"})


def test_an_unknown_version_is_refused() -> None:
    with pytest.raises(UnknownMessageVersionError, match="version 7 is unknown"):
        Contracts(V1, V2).read(message(7, id="a"))
    with pytest.raises(UnknownMessageVersionError, match="has only version 1"):
        Contracts().read(message(2, id="a"))


@pytest.mark.parametrize(
    ("newer", "problem"),
    [
        (PayloadSchema("thing.do", 2, {}), "drops"),
        (PayloadSchema("thing.do", 2, {"id": REQUIRED, "size": REQUIRED}), "adds required"),
    ],
)
def test_an_incompatible_version_is_reported(newer: PayloadSchema, problem: str) -> None:
    assert problem in Contracts(V1, newer).compatibility_problems()[0]
