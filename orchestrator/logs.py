"""structlog set-up: console lines for people, JSON lines for machines.

Records from the standard library's logging (faust, aiokafka, uvicorn, SQLAlchemy) go
through the same processors, so every line of a process has one format. This holds only while
no library installs handlers of its own after `configure`: uvicorn must be run with
`log_config=None`, and faust's worker given `stdlib_config` (it configures logging again
when it starts).
"""

from __future__ import annotations

import logging
import logging.config
import sys
from types import TracebackType
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


def library_level(level: str) -> str:
    """The level of the libraries' loggers: their INFO lines narrate too much, and a debug
    line below the level is never formatted."""
    return "debug" if level == "debug" else "warning"


def configure(level: str = "info", fmt: str = "console") -> None:
    logging.config.dictConfig(stdlib_config(fmt, library_level(level)))
    # warnings.warn writes plain text to stderr unless logging takes it
    logging.captureWarnings(True)
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
    sys.excepthook = _log_uncaught


def _log_uncaught(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:
    """An exception that ends the process (a broker away at start, say) is logged as one
    event instead of the interpreter's plain traceback."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, traceback)
        return
    structlog.get_logger(__name__).critical(
        "uncaught_exception", exc_info=(kind, error, traceback)
    )
