from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class OrchestratorError(Exception):
    """The orchestrator failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__ or type(self).__name__)

    @property
    def message(self) -> str:
        return str(self.args[0])


class SagaNotFoundError(OrchestratorError):
    """No saga has this id."""


class UnknownSagaTypeError(OrchestratorError):
    """No saga definition has this name (and version)."""


class InvalidSagaInputError(OrchestratorError):
    """The saga input does not match the saga type's schema."""

    def __init__(self, problems: Sequence[Mapping[str, Any]], message: str | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems)


class InputTooLargeError(OrchestratorError):
    """The saga input is larger than its messages may be."""


class InvalidDefinitionError(OrchestratorError):
    """The saga definition is not valid."""


class InvalidTransitionError(OrchestratorError):
    """The transition is not allowed from the current state."""


class ConcurrencyConflictError(OrchestratorError):
    """The saga was changed by another writer."""


class UndecodableMessageError(OrchestratorError):
    """The message cannot be decoded."""


class OperatorActionRefusedError(OrchestratorError):
    """The saga's state does not allow this operator action."""


class IdempotencyConflictError(OrchestratorError):
    """The idempotency key was used before with a different request."""


class InvalidQueryError(OrchestratorError):
    """The query is not valid."""


class NotReadyError(OrchestratorError):
    """The service is not ready."""


class UnknownMessageTypeError(OrchestratorError):
    """The message's type is not one this saga sends or answers."""
