"""The REST routes."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response, status

from orchestrator.api import schemas
from orchestrator.ports import SagaReader
from orchestrator.saga.errors import SagaNotFoundError
from orchestrator.service import SagaService

router = APIRouter()

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": schemas.ErrorResponse, "description": "no saga has this id"},
    422: {"model": schemas.ErrorResponse, "description": "the request is not valid"},
}


def service(request: Request) -> SagaService:
    result: SagaService = request.app.state.service
    return result


def reader(request: Request) -> SagaReader:
    result: SagaReader = request.app.state.reader
    return result


@router.post(
    "/sagas",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=schemas.SagaStarted,
    responses={422: _ERRORS[422]},
    summary="Start a saga",
)
async def start_saga(
    body: schemas.StartSaga,
    request: Request,
    response: Response,
    sagas: Annotated[SagaService, Depends(service)],
) -> schemas.SagaStarted:
    saga = await sagas.start_saga(body.type, body.input, body.version)
    response.headers["Location"] = str(request.url_for("get_saga", saga_id=saga.id))
    return schemas.SagaStarted(id=saga.id, status=saga.status.value)


@router.get(
    "/sagas/{saga_id}",
    response_model=schemas.SagaDetail,
    responses={404: _ERRORS[404]},
    summary="Read a saga with its steps and timeline",
)
async def get_saga(
    saga_id: Annotated[str, Path(description="the saga's id (a UUID)")],
    sagas: Annotated[SagaReader, Depends(reader)],
) -> dict[str, Any]:
    view = await sagas.saga_view(saga_id) if _is_uuid(saga_id) else None
    if view is None:
        raise SagaNotFoundError(f"no saga has id {saga_id}")
    return view


@router.get("/health", summary="Liveness and database reachability")
async def health(sagas: Annotated[SagaReader, Depends(reader)]) -> dict[str, str]:
    await sagas.saga_view(str(uuid.UUID(int=0)))
    return {"status": "ok"}


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
