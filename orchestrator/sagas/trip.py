"""The trip booking saga: book a flight, a hotel and a car; cancel each on failure."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Annotated, Any

import pydantic

from orchestrator import input_schema
from orchestrator.saga.definition import Payload, SagaDefinition, Step

Code = Annotated[str, pydantic.StringConstraints(pattern=r"^[A-Z]{3}$")]
Text = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=128)]


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class Flight(_Model):
    origin: Code = pydantic.Field(alias="from")
    to: Code
    date: dt.date


class Hotel(_Model):
    city: Text
    checkIn: dt.date
    nights: Annotated[int, pydantic.Field(gt=0, le=365)]


class Car(_Model):
    city: Text
    days: Annotated[int, pydantic.Field(gt=0, le=365)]


class TripInput(_Model):
    tripId: Text
    traveller: Text
    flight: Flight
    hotel: Hotel
    car: Car


validate_input = input_schema.validator(TripInput, "trip")


def _booking(part: str) -> Any:
    def build(inp: Mapping[str, Any], ctx: Mapping[str, Any]) -> Payload:
        return {"tripId": inp["tripId"], "traveller": inp["traveller"], **inp[part]}

    return build


def _cancel(part: str) -> Any:
    def build(inp: Mapping[str, Any], ctx: Mapping[str, Any]) -> Payload:
        return {"tripId": inp["tripId"], "bookingId": ctx.get(f"{part}BookingId")}

    return build


DEFINITION = SagaDefinition(
    name="trip",
    version=1,
    validate_input=validate_input,
    steps=tuple(
        Step(
            name=f"book_{part}",
            participant=part,
            command=f"{part}.book",
            build=_booking(part),
            compensation=f"{part}.cancel",
            build_compensation=_cancel(part),
        )
        for part in ("flight", "hotel", "car")
    ),
)

DEFINITIONS = (DEFINITION,)
