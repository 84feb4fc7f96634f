"""Saga input schemas written as pydantic models, turned into a definition's validator."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pydantic

from orchestrator.saga.definition import InputValidator, Payload
from orchestrator.saga.errors import InvalidSagaInputError


@dataclasses.dataclass(frozen=True, slots=True)
class Sensitive:
    """Marks a string field (`Annotated[str, Sensitive("payment")]`): it is stored and carried
    sealed for `reader`, the one participant that reads it, and shown only masked."""

    reader: str


@dataclasses.dataclass(frozen=True, slots=True)
class SensitiveField:
    path: str  # the top-level key of the input
    reader: str


@dataclasses.dataclass(frozen=True, slots=True)
class SchemaValidator:
    model: type[pydantic.BaseModel]
    what: str
    sensitive: tuple[SensitiveField, ...]
    adapter: pydantic.TypeAdapter[pydantic.BaseModel]

    def __call__(self, raw: Mapping[str, Any]) -> Payload:
        try:
            value = self.adapter.validate_python(raw)
        except pydantic.ValidationError as exc:
            # field and message only: pydantic's `input` would echo a sensitive value
            problems = [
                {"field": ".".join(str(p) for p in err["loc"]), "problem": err["msg"]}
                for err in exc.errors(include_url=False, include_input=False)
            ]
            raise InvalidSagaInputError(problems, f"the {self.what} input is not valid") from None
        result: Payload = value.model_dump(mode="json", by_alias=True)
        return result


def validator(model: type[pydantic.BaseModel], what: str) -> InputValidator:
    """Validate with `model`; every problem is reported with the field it concerns."""
    return SchemaValidator(model, what, _sensitive(model), pydantic.TypeAdapter(model))


def sensitive_fields(validate: InputValidator) -> tuple[SensitiveField, ...]:
    """The fields a definition's input validator marks sensitive (none for a plain function)."""
    return validate.sensitive if isinstance(validate, SchemaValidator) else ()


def _sensitive(model: type[pydantic.BaseModel]) -> tuple[SensitiveField, ...]:
    found = []
    for name, info in model.model_fields.items():
        for mark in info.metadata:
            if isinstance(mark, Sensitive):
                if info.annotation is not str:
                    raise TypeError(f"{model.__name__}.{name}: only a str field can be sensitive")
                found.append(SensitiveField(info.alias or name, mark.reader))
    return tuple(found)
