"""The REST api fuzzed from its own OpenAPI schema: no 5xx, and every error a JSON body
that says what was wrong."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.e2e.system import OPERATOR_TOKEN, System

pytestmark = pytest.mark.e2e


def errors_say_what_was_wrong(ctx: Any, response: Any, case: Any) -> None:
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body["error"]["message"], str), body
        assert body["error"]["message"], body
        assert body["error"]["code"], body


def test_the_api_answers_any_request_without_a_server_error(system: System) -> None:
    schema = schemathesis.openapi.from_url(f"{system.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9
    statuses: list[int] = []

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        def fuzz(case: Any) -> None:
            response = case.call_and_validate(
                headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
                checks=[not_a_server_error, errors_say_what_was_wrong],
            )
            statuses.append(response.status_code)

        fuzz()

    assert len(statuses) >= 100
    assert {404, 422} <= set(statuses)  # the fuzzing reached the validation and the lookups


def test_oversized_and_malformed_bodies_get_413_and_422(system: System) -> None:
    huge = b'{"type": "order", "input": {"x": "' + b"a" * 2_000_000 + b'"}}'
    too_big = system.api.post("/sagas", content=huge, headers={"content-type": "application/json"})
    malformed = system.api.post(
        "/sagas",
        content=b'{"type": "order", "input": {',
        headers={"content-type": "application/json"},
    )

    assert too_big.status_code == 413
    assert too_big.json()["error"]["code"] == "body_too_large"
    assert malformed.status_code == 422
    assert malformed.json()["error"]["code"] == "invalid_request"
