"""structlog set-up: console lines for people, JSON lines for machines.

Records from the standard library's logging (faust, aiokafka, uvicorn, SQLAlchemy) go
through the same processors, so every line of a process has one format.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from typing import Any

import structlog

_SHARED: list[structlog.typing.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def _renderer(fmt: str) -> structlog.typing.Processor:
    if fmt == "json":
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())


def stdlib_config(fmt: str = "console", libraries: str = "warning") -> dict[str, Any]:
    """A logging.config dict rendering stdlib records with structlog's processors."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structlog": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    _renderer(fmt),
                ],
                "foreign_pre_chain": [*_SHARED, structlog.stdlib.add_logger_name],
            }
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "structlog",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": libraries.upper(), "handlers": ["stderr"]},
    }


def configure(level: str = "info", fmt: str = "console") -> None:
    logging.config.dictConfig(stdlib_config(fmt, "debug" if level == "debug" else "warning"))
    structlog.configure(
        processors=[
            *_SHARED,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            _renderer(fmt),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
