"""A Python client of the orchestrator's api, sync and async.

from orchestrator.client import SagaClient

with SagaClient("http://127.0.0.1:8000", token="...") as sagas:
    started = sagas.start("order", {...})
    saga = sagas.wait(started.id, timeout=60)
"""

from orchestrator.client.aio import AsyncSagaClient
from orchestrator.client.calls import ListFilters
from orchestrator.client.errors import (
    ApiError,
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    SagaClientError,
    ServerError,
    TransportError,
    UnauthorizedError,
    UnexpectedResponseError,
    WaitTimeoutError,
)
from orchestrator.client.models import (
    OldestRunning,
    Overdue,
    Page,
    Resolving,
    Saga,
    SagaSummary,
    Started,
    Stats,
    Step,
    TimelineEntry,
    TimelinePage,
)
from orchestrator.client.sync import SagaClient

__all__ = [
    "ApiError",
    "AsyncSagaClient",
    "ConflictError",
    "ForbiddenError",
    "InvalidRequestError",
    "ListFilters",
    "NotFoundError",
    "OldestRunning",
    "Overdue",
    "Page",
    "Resolving",
    "Saga",
    "SagaClient",
    "SagaClientError",
    "SagaSummary",
    "ServerError",
    "Started",
    "Stats",
    "Step",
    "TimelineEntry",
    "TimelinePage",
    "TransportError",
    "UnauthorizedError",
    "UnexpectedResponseError",
    "WaitTimeoutError",
]
