"""Versioned message payloads: the tolerant reader and upcasting.

A new version of a message only adds fields, each with a default. A reader that knows
version n reads any known version: an older one is upcast (the defaults filled in), a
newer one is read tolerantly (the fields it does not know are left out). A version nobody
registered is refused, so it is dead-lettered rather than half applied.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from typing import Any

from orchestrator.saga.errors import OrchestratorError
from orchestrator.saga.messages import Message

REQUIRED: Any = object()


class UnknownMessageVersionError(OrchestratorError):
    """The message's schema version is not one that is registered."""


@dataclasses.dataclass(frozen=True)
class PayloadSchema:
    message_type: str
    version: int
    fields: Mapping[str, Any]  # name -> default, or REQUIRED


class Contracts:
    def __init__(self, *schemas: PayloadSchema) -> None:
        self._schemas: dict[str, dict[int, PayloadSchema]] = {}
        for schema in schemas:
            self._schemas.setdefault(schema.message_type, {})[schema.version] = schema

    def versions(self, message_type: str) -> list[int]:
        return sorted(self._schemas.get(message_type, {1: None}))

    def read(self, message: Message, as_version: int | None = None) -> Message:
        """The message as a reader of `as_version` (the newest when None) sees it."""
        known = self._schemas.get(message.message_type)
        if known is None:
            if message.version != 1:
                raise UnknownMessageVersionError(
                    f"{message.message_type} version {message.version} is unknown "
                    "(it has only version 1)"
                )
            return message
        if message.version not in known:
            raise UnknownMessageVersionError(
                f"{message.message_type} version {message.version} is unknown "
                f"(known: {sorted(known)})"
            )
        target = known[as_version if as_version is not None else max(known)]
        payload = {
            name: message.payload.get(name, default)
            for name, default in target.fields.items()
            if name in message.payload or default is not REQUIRED
        }
        return dataclasses.replace(message, payload=payload, version=target.version)

    def compatibility_problems(self) -> list[str]:
        """Each version must keep every field of the one before and add only optional ones."""
        problems = []
        for message_type, versions in sorted(self._schemas.items()):
            ordered = [versions[v] for v in sorted(versions)]
            for older, newer in itertools.pairwise(ordered):
                dropped = set(older.fields) - set(newer.fields)
                if dropped:
                    problems.append(f"{message_type} v{newer.version} drops {sorted(dropped)}")
                added = set(newer.fields) - set(older.fields)
                required = sorted(f for f in added if newer.fields[f] is REQUIRED)
                if required:
                    problems.append(
                        f"{message_type} v{newer.version} adds required fields {required}"
                    )
        return problems
