"""Domain errors to HTTP answers, in one table. Nothing else in the api catches broadly."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException

from orchestrator.faults import Fault, StoreError
from orchestrator.saga import errors

log = structlog.get_logger(__name__)

STATUS_OF: dict[type[errors.OrchestratorError], tuple[int, str]] = {
    errors.SagaNotFoundError: (404, "saga_not_found"),
    errors.UnknownSagaTypeError: (422, "unknown_saga_type"),
    errors.InvalidSagaInputError: (422, "invalid_input"),
    errors.InputTooLargeError: (413, "input_too_large"),
    errors.InvalidTransitionError: (409, "invalid_transition"),
    errors.ConcurrencyConflictError: (409, "conflict"),
    errors.OperatorActionRefusedError: (409, "action_refused"),
    errors.IdempotencyConflictError: (409, "idempotency_conflict"),
    errors.InvalidQueryError: (422, "invalid_query"),
    errors.NotReadyError: (503, "not_ready"),
}


MAX_DETAILS = 20


def error_response(
    status: int, code: str, message: str, details: list[dict[str, Any]] | None = None
) -> JSONResponse:
    message, details = bounded(message, details or [])
    body = {"error": {"code": code, "message": message, "details": details}}
    return JSONResponse(status_code=status, content=body)


def bounded(message: str, details: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """An input with thousands of unknown keys must not have them all echoed back."""
    if len(details) <= MAX_DETAILS:
        return message, details
    summary = f"{message} ({len(details)} problems, the first {MAX_DETAILS} listed)"
    return summary, details[:MAX_DETAILS]


def answer_for(exc: Exception) -> tuple[int, str, str, list[dict[str, Any]]]:
    """The status, code, message and details that answer a request `exc` refused."""
    if isinstance(exc, errors.OrchestratorError):
        for error_type in type(exc).__mro__:
            if error_type in STATUS_OF:
                status, code = STATUS_OF[error_type]
                problems = exc.problems if isinstance(exc, errors.InvalidSagaInputError) else []
                return status, code, *bounded(exc.message, [dict(p) for p in problems])
    if isinstance(exc, sa_exc.DataError) or (isinstance(exc, StoreError) and exc.value_refused):
        return 422, "invalid_value", "a value of the request cannot be stored or compared", []
    if isinstance(exc, StoreError) and exc.fault is not Fault.POISON:
        return 503, "store_unavailable", "the database is unavailable; try again", []
    log.error("unmapped_error", error=repr(exc))
    return 500, "internal_error", "the orchestrator failed; see its log", []


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    response = error_response(*answer_for(exc))
    if response.status_code == 503:
        response.headers["Retry-After"] = "1"
    return response


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [
        {"field": ".".join(str(p) for p in err["loc"]), "problem": err["msg"]}
        for err in exc.errors()
    ]
    return error_response(422, "invalid_request", "the request is not valid", details)


_HTTP_CODES = {401: "unauthenticated", 403: "forbidden", 404: "not_found", 405: "not_allowed"}


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    response = error_response(
        exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"), str(exc.detail)
    )
    response.headers.update(exc.headers or {})
    return response


async def _unstorable(request: Request, exc: Exception) -> JSONResponse:
    """PostgreSQL refused a value of the request (class 22: a NUL, a number out of range)."""
    log.info("request_value_refused", path=request.url.path, error=type(exc).__name__)
    return error_response(
        422, "invalid_value", "a value of the request cannot be stored or compared"
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("request_failed", path=request.url.path)
    return error_response(500, "internal_error", "the orchestrator failed; see its log")


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.OrchestratorError, _domain_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(sa_exc.DataError, _unstorable)
    app.add_exception_handler(StoreError, _domain_error)
    app.add_exception_handler(Exception, _unexpected)
