"""Saga input schemas written as pydantic models, turned into a definition's validator."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic

from orchestrator.saga.definition import InputValidator, Payload
from orchestrator.saga.errors import InvalidSagaInputError


def validator(model: type[pydantic.BaseModel], what: str) -> InputValidator:
    """Validate with `model`; every problem is reported with the field it concerns."""
    adapter = pydantic.TypeAdapter(model)

    def validate(raw: Mapping[str, Any]) -> Payload:
        try:
            value = adapter.validate_python(raw)
        except pydantic.ValidationError as exc:
            problems = [
                {"field": ".".join(str(p) for p in err["loc"]), "problem": err["msg"]}
                for err in exc.errors(include_url=False)
            ]
            raise InvalidSagaInputError(problems, f"the {what} input is not valid") from None
        result: Payload = value.model_dump(mode="json", by_alias=True)
        return result

    return validate
