"""What a participant's author imports: the runtime every participant shares (inbox,
tombstones, resolves, replies) and the pieces to build one.

    from participants.kit import Participant, kit_tables, participant_metadata, succeeded

- `Participant(name, inbox, ledger, actions, compensations, migrations=...)`: the handlers
  by command type. An action is `async (conn, command) -> Result`; a compensation is
  `async (conn, command, applied) -> Result`, `applied` being what its action stored.
- `succeeded(**data)`, `refused(code, message)` (a definite no: the saga compensates) and
  `retryable(code, message)` (not now: the step's retry policy sends it again).
- `participant_metadata(schema)` and `kit_tables(metadata)`: the participant's own schema
  and the inbox and step ledger the kit keeps in it.
- `serve(participant, settings, web_port)`: run it (what `participants worker NAME` does).
- `participants.kit.testing.ParticipantTester`: test handlers with these rules, no Kafka.
- `participants.kit.migrate`: the participant's own Alembic history.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from participants.kit.participant import (
    CompensationHandler,
    Handler,
    Participant,
    Result,
    refused,
    retryable,
    succeeded,
)
from participants.kit.tables import kit_tables, participant_metadata

if TYPE_CHECKING:
    from orchestrator.settings import Settings


def serve(participant: Participant, settings: Settings | None = None, web_port: int = 0) -> None:
    """Consume the participant's commands until SIGTERM or SIGINT; with `web_port`, serve
    /healthz, /readyz and /metrics on it."""
    from orchestrator.settings import load_settings
    from participants import runtime

    runtime.serve(participant, settings or load_settings(), web_port)


__all__ = [
    "CompensationHandler",
    "Handler",
    "Participant",
    "Result",
    "kit_tables",
    "participant_metadata",
    "refused",
    "retryable",
    "serve",
    "succeeded",
]
