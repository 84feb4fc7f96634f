"""A saga type the api knows and the worker does not: what a deployment looks like when the
api was rolled out with a new definition before the worker.

`orphan` books a flight, with a deadline short enough to fire within a test; the tests that
use it run without the flight participant, so the deadline always fires.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestrator.saga.definition import Payload, RetryPolicy, SagaDefinition, Step
from orchestrator.saga.errors import InvalidSagaInputError


def _validate(raw: Mapping[str, Any]) -> Payload:
    ref = raw.get("ref")
    if not isinstance(ref, str) or not ref:
        problem = {"field": "ref", "problem": "a non-empty string is required"}
        raise InvalidSagaInputError([problem], "the orphan input is not valid")
    return {"ref": ref}


def _book(inp: Mapping[str, Any], ctx: Mapping[str, Any]) -> Payload:
    return {
        "tripId": inp["ref"],
        "traveller": "t-1",
        "from": "BER",
        "to": "LIS",
        "date": "2030-01-01",
    }


def _cancel(inp: Mapping[str, Any], ctx: Mapping[str, Any]) -> Payload:
    return {"tripId": inp["ref"], "bookingId": ctx.get("flightBookingId")}


ORPHAN = SagaDefinition(
    name="orphan",
    version=1,
    validate_input=_validate,
    steps=(
        Step(
            name="book_flight",
            participant="flight",
            command="flight.book",
            build=_book,
            compensation="flight.cancel",
            build_compensation=_cancel,
            timeout_s=1.0,
            retry=RetryPolicy(max_attempts=1),
            compensation_timeout_s=1.0,
        ),
    ),
)

DEFINITIONS = (ORPHAN,)
