"""One logging setup for every process: JSON Lines on stdout.

Every line is one JSON object with `timestamp` (ISO 8601, UTC), `level` and
`event`. Our own events come from structlog; Flower's `flwr` logger and the
uvicorn loggers of its HTTP APIs are taken over and rendered by the same
pipeline (flower_hooks.py), so a container's stdout is pure JSON Lines.

Settings (environment):
  LOG_FORMAT  json (default) | console (human-readable, for local development)
  LOG_LEVEL   DEBUG | INFO (default) | WARNING | ERROR; falls back to FLWR_LOG_LEVEL
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

from flowerdock_logging import flower_hooks
from flowerdock_logging.render import add_schema_version, ids_as_strings, make_formatter, shared_processors
from flowerdock_logging.streams import OURS, CurrentStdout


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)


def configure_logging(log_format: str | None = None, level: str | None = None) -> None:
    """Route structlog and the stdlib loggers to stdout as JSON (or console) lines.

    Safe to call again: it replaces what an earlier call installed.
    """
    log_format = (log_format or os.getenv("LOG_FORMAT") or "json").lower()
    if log_format not in ("json", "console"):
        raise ValueError(f"LOG_FORMAT must be 'json' or 'console', got {log_format!r}")
    level_name = (level or os.getenv("LOG_LEVEL") or os.getenv("FLWR_LOG_LEVEL") or "INFO").upper()
    if level_name not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level_name!r}")

    formatter = make_formatter(log_format)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, OURS, False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(CurrentStdout())
    flower_hooks.adopt(handler, formatter)
    root.addHandler(handler)
    # Our loggers at the chosen level; other libraries (httpx logs every request,
    # alembic every plugin) only from WARNING unless DEBUG is asked for.
    root.setLevel(level_name if level_name == "DEBUG" else "WARNING")
    logging.getLogger("app").setLevel(level_name)

    structlog.configure(
        processors=[*shared_processors(), add_schema_version, ids_as_strings,
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,  # a later configure_logging() must take effect
    )
    logging.captureWarnings(True)  # warnings.warn() would print raw text to stderr
    sys.excepthook = log_uncaught
    flower_hooks.install(formatter)  # Flower and uvicorn may be imported already, or later


def log_uncaught(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    logging.getLogger("uncaught").critical("uncaught_exception", exc_info=(exc_type, exc, tb))
