"""The client's exceptions: the api's refusals carry its error code, status and message."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class SagaClientError(Exception):
    """The client could not do what was asked."""


class TransportError(SagaClientError):
    """The api could not be reached, or the connection broke before it answered."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the api at {url}: {reason}")
        self.url = url
        self.reason = reason


class UnexpectedResponseError(SagaClientError):
    """The answer is not one the api gives (a proxy's page, another service?)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: the answer is not the api's: {reason}")
        self.status = status


class WaitTimeoutError(SagaClientError, TimeoutError):
    """The saga did not settle in time."""

    def __init__(self, saga_id: str, timeout_s: float, status: str | None = None) -> None:
        state = f"still {status}" if status else "not settled"
        super().__init__(f"saga {saga_id} is {state} after {timeout_s:g}s")
        self.saga_id = saga_id
        self.timeout_s = timeout_s
        self.status = status


class ApiError(SagaClientError):
    """The api refused the request: `code` is its error code (`saga_not_found`,
    `invalid_transition`, `idempotency_conflict`, ...), `status` the HTTP status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: tuple[Mapping[str, Any], ...] = (),
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class InvalidRequestError(ApiError):
    """400, 413 or 422: the request, a parameter or the saga's input is not valid."""


class UnauthorizedError(ApiError):
    """401: no valid bearer token."""


class ForbiddenError(ApiError):
    """403: the token's role does not allow this."""


class NotFoundError(ApiError):
    """404: no saga has this id (code `saga_not_found`), or no such endpoint."""


class ConflictError(ApiError):
    """409: the saga's state does not allow this, or the idempotency key was used before
    for another request."""


class ServerError(ApiError):
    """5xx: the api or its database failed; a retry may help."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: InvalidRequestError,
    422: InvalidRequestError,
}


def api_error(status: int, body: Any, text: str) -> ApiError:
    """The exception for an error answer: the api's `{"error": {...}}` body, else (a proxy
    answered) the status with the body's text."""
    kind = _BY_STATUS.get(status, ServerError if status >= 500 else ApiError)
    error = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(error, Mapping) and isinstance(error.get("message"), str):
        details = error.get("details")
        return kind(
            status,
            str(error.get("code") or "http_error"),
            error["message"],
            tuple(d for d in details if isinstance(d, Mapping))
            if isinstance(details, list)
            else (),
        )
    return kind(status, "http_error", text.strip()[:500] or f"HTTP {status}")
