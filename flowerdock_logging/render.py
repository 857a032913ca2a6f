"""How a log event becomes a line: the structlog processors and the JSON (or console)
renderer shared by our events and the stdlib records of Flower and uvicorn."""

from __future__ import annotations

import json
import math
import sys
from datetime import datetime, timezone
from typing import Any

import structlog

# Version of the app's events and their fields (docs/log-schema.md). Every event
# the app itself logs carries it as `schema_version`; raise it when a field
# changes meaning or goes away (adding a field does not need a new version).
LOG_SCHEMA_VERSION = 2

FIRST_KEYS = ("timestamp", "level", "event", "logger")
FLOWER_IDS = ("run_id", "node_id")


def shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]


def make_formatter(log_format: str) -> structlog.stdlib.ProcessorFormatter:
    if log_format == "console":
        renderer: Any = structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    else:
        renderer = structlog.processors.JSONRenderer(serializer=dumps)
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared_processors(), from_stdlib_record],
        pass_foreign_args=True,  # for from_stdlib_record
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            order_keys,
            renderer,
        ],
    )


def add_schema_version(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Only the app's own events (structlog) are versioned; Flower's records are not ours."""
    event_dict["schema_version"] = LOG_SCHEMA_VERSION
    return event_dict


def ids_as_strings(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Flower's run and node IDs are unsigned 64-bit. JSON readers that hold numbers
    as doubles (JavaScript, jq) or signed 64-bit integers (Elasticsearch's long,
    json-c in rsyslog, which clamps them to 2^63-1) corrupt most of them, so they
    are written as strings, as Flower's own `--format json` does."""
    for key in FLOWER_IDS:
        value = event_dict.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            event_dict[key] = str(value)
    return event_dict


def from_stdlib_record(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Tidy a record from Flower or uvicorn: trim Flower's tab-and-arrow layout,
    and give HTTP access lines their fields."""
    event_dict["event"] = str(event_dict.get("event", "")).strip().lstrip("└─> ").strip()
    args = event_dict.pop("positional_args", None)
    record = event_dict.get("_record")
    if record is not None and record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
        client, method, path, _version, status = args
        event_dict.update(client=client, method=method, path=path, status=int(status))
    return event_dict


def order_keys(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    first = {k: event_dict.pop(k) for k in FIRST_KEYS if k in event_dict}
    return {**first, **event_dict}


def dumps(obj: Any, **kwargs: Any) -> str:
    return json.dumps(finite(obj), default=str, allow_nan=False, ensure_ascii=False)


def finite(value: Any) -> Any:
    """JSON has no NaN or Infinity: write them as null rather than invalid JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def timestamp() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
