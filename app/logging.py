"""One logging setup for every process: JSON Lines on stdout.

Every line is one JSON object with `timestamp` (ISO 8601, UTC), `level` and
`event`. Our own events come from structlog; Flower's `flwr` logger and the
uvicorn loggers of its HTTP APIs are taken over and rendered by the same
pipeline, so a container's stdout is pure JSON Lines.

Settings (environment):
  LOG_FORMAT  json (default) | console (human-readable, for local development)
  LOG_LEVEL   DEBUG | INFO (default) | WARNING | ERROR; falls back to FLWR_LOG_LEVEL

`flowerdock_logging.pth`, installed next to the package, calls
`install_startup_hook()` when any Python process of the environment starts, so
Flower's daemons and the subprocesses they spawn print JSON from their first line.
"""

from __future__ import annotations

import atexit
import importlib.abc
import importlib.machinery
import json
import logging
import math
import os
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from types import ModuleType
from typing import Any

import structlog

__all__ = ["LOG_SCHEMA_VERSION", "configure_logging", "get_logger", "install_startup_hook"]

# Version of the app's events and their fields (docs/log-schema.md). Every event
# the app itself logs carries it as `schema_version`; raise it when a field
# changes meaning or goes away (adding a field does not need a new version).
LOG_SCHEMA_VERSION = 2

_OURS = "_flowerdock_handler"  # marks handlers this module owns or took over
_FIRST_KEYS = ("timestamp", "level", "event", "logger")


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

    formatter = _make_formatter(log_format)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(_CurrentStdout())
    _adopt(handler, formatter)
    root.addHandler(handler)
    # Our loggers at the chosen level; other libraries (httpx logs every request,
    # alembic every plugin) only from WARNING unless DEBUG is asked for.
    root.setLevel(level_name if level_name == "DEBUG" else "WARNING")
    logging.getLogger("app").setLevel(level_name)

    structlog.configure(
        processors=[*_shared_processors(), _add_schema_version, _ids_as_strings,
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,  # a later configure_logging() must take effect
    )
    logging.captureWarnings(True)  # warnings.warn() would print raw text to stderr
    sys.excepthook = _log_uncaught

    # Flower and uvicorn may be imported already, or later: cover both.
    global _formatter
    _formatter = formatter
    for name, take_over in _TAKE_OVER.items():
        if name in sys.modules:
            take_over(sys.modules[name])
    if not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport())


# The `flwr` CLI is a person's terminal tool (`flwr ls | grep`), not one of the
# project's processes: its output is Flower's, untouched.
USER_TOOLS = ("flwr",)


def _program() -> str:
    return os.path.basename(sys.argv[0]) if getattr(sys, "argv", None) else ""


def install_startup_hook() -> None:
    """Entry point of `flowerdock_logging.pth`: configure logging at interpreter start."""
    if os.getenv("LOG_FORMAT", "json").lower() == "off" or _program() in USER_TOOLS:
        return
    try:
        configure_logging()
    except ValueError as exc:  # a bad LOG_FORMAT/LOG_LEVEL: say what to fix, carry on with defaults
        configure_logging("json", "INFO")
        get_logger("app.logging").error("logging_config_invalid", error=str(exc))
    forget_installed_app()
    guard_program_output()


def forget_installed_app() -> None:
    """Flower loads the app from the FAB it received (its folder goes first on
    sys.path), but only if `app` is not imported yet. Forget this installed copy
    so that the code of the submitted run, not the image's, is what runs."""
    for name in [n for n in sys.modules if n == "app" or n.startswith("app.")]:
        del sys.modules[name]


def guard_program_output() -> None:
    """Whatever else a Flower program prints (print() in its code, a banner) must
    not break the JSON Lines of a container's output. Only Flower's daemons and
    apps are guarded (flower-*, flwr-*: not pytest, not pip, not the `flwr` CLI),
    and never a terminal. Also called by a ClientApp
    forked from the warm launcher (docker/clientapp_forkserver.py), once it has its argv."""
    program = _program()
    if os.getenv("LOG_FORMAT", "json").lower() == "json" and program.startswith(("flower-", "flwr-")):
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if stream is not None and not stream.isatty() and not getattr(stream, _OURS, False):
                setattr(sys, name, _JsonLinesGuard(stream, name))


# --- Rendering --------------------------------------------------------------------


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]


def _make_formatter(log_format: str) -> structlog.stdlib.ProcessorFormatter:
    if log_format == "console":
        renderer: Any = structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared_processors(), _from_stdlib_record],
        pass_foreign_args=True,  # for _from_stdlib_record
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _order_keys,
            renderer,
        ],
    )


def _add_schema_version(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Only the app's own events (structlog) are versioned; Flower's records are not ours."""
    event_dict["schema_version"] = LOG_SCHEMA_VERSION
    return event_dict


_FLOWER_IDS = ("run_id", "node_id")


def _ids_as_strings(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Flower's run and node IDs are unsigned 64-bit. JSON readers that hold numbers
    as doubles (JavaScript, jq) or signed 64-bit integers (Elasticsearch's long,
    json-c in rsyslog, which clamps them to 2^63-1) corrupt most of them, so they
    are written as strings, as Flower's own `--format json` does."""
    for key in _FLOWER_IDS:
        value = event_dict.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            event_dict[key] = str(value)
    return event_dict


def _from_stdlib_record(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Tidy a record from Flower or uvicorn: trim Flower's tab-and-arrow layout,
    and give HTTP access lines their fields."""
    event_dict["event"] = str(event_dict.get("event", "")).strip().lstrip("└─> ").strip()
    args = event_dict.pop("positional_args", None)
    record = event_dict.get("_record")
    if record is not None and record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
        client, method, path, _version, status = args
        event_dict.update(client=client, method=method, path=path, status=int(status))
    return event_dict


def _order_keys(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    first = {k: event_dict.pop(k) for k in _FIRST_KEYS if k in event_dict}
    return {**first, **event_dict}


def _dumps(obj: Any, **kwargs: Any) -> str:
    return json.dumps(_finite(obj), default=str, allow_nan=False, ensure_ascii=False)


def _finite(value: Any) -> Any:
    """JSON has no NaN or Infinity: write them as null rather than invalid JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class _CurrentStdout:
    """Whatever sys.stdout is when a line is written.

    Flower's ServerApp process wraps sys.stdout's write to capture its output for
    `flwr log`, and test runners swap sys.stdout; a handler bound to the stream
    object of its creation time would miss both. (StreamHandler writes each line
    in one call, so processes sharing a container's stdout never split a line.)
    """

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


class _JsonLinesGuard:
    """A text stream that passes JSON-object lines through and wraps any other
    line as {"timestamp", "level", "event": <line>, "logger": "stdout"|"stderr"}."""

    def __init__(self, stream: Any, name: str) -> None:
        self._stream = stream
        self._name = name
        self._level = "info" if name == "stdout" else "error"
        self._pending = ""
        setattr(self, _OURS, True)
        atexit.register(self._write_pending)  # a last line without "\n" is not lost

    def _write_pending(self) -> None:
        if self._pending:
            self._stream.write(self._guard(self._pending))
            self._pending = ""
            self._stream.flush()

    def write(self, text: str) -> int:
        lines = (self._pending + text).split("\n")
        self._pending = lines.pop()
        out = "".join(self._guard(line) for line in lines)
        if out:
            self._stream.write(out)
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def _guard(self, line: str) -> str:
        stripped = line.strip()
        if not stripped:
            return ""
        if stripped.startswith("{"):
            try:
                json.loads(stripped)
                return stripped + "\n"
            except ValueError:
                pass
        timestamp = _timestamp()
        return _dumps({"timestamp": timestamp, "level": self._level, "event": stripped, "logger": self._name}) + "\n"

    def __getattr__(self, attr: str) -> Any:  # encoding, fileno, isatty, buffer...
        return getattr(self._stream, attr)


def _timestamp() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _drop_blank(record: logging.LogRecord) -> bool:
    """Flower logs empty lines as visual separators; they carry no event."""
    try:
        return bool(str(record.getMessage()).strip())
    except Exception:  # noqa: BLE001
        return True


def _log_uncaught(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    logging.getLogger("uncaught").critical("uncaught_exception", exc_info=(exc_type, exc, tb))


# --- Taking over Flower's and uvicorn's handlers ------------------------------------

_formatter: logging.Formatter | None = None


def _adopt(handler: logging.Handler, formatter: logging.Formatter) -> None:
    """Make a handler print our lines: our formatter, stdout, no blank events."""
    handler.setFormatter(formatter)
    # Flower's ConsoleHandler overrides format() and ignores its formatter.
    handler.format = formatter.format  # type: ignore[method-assign]
    if isinstance(handler, logging.StreamHandler):
        handler.setStream(_CurrentStdout())
    if _drop_blank not in handler.filters:
        handler.addFilter(_drop_blank)
    setattr(handler, _OURS, True)


def _take_over_flower(module: ModuleType) -> None:
    if _formatter is not None:
        _adopt(module.console_handler, _formatter)  # Flower's one console handler
    logging.getLogger("flwr").propagate = False  # that handler prints it, once


def _take_over_uvicorn(module: ModuleType) -> None:
    original = module.Config.configure_logging
    if getattr(original, _OURS, False):
        return

    def configure_logging_then_adopt(self: Any) -> None:
        original(self)  # uvicorn applies its (or Flower's) dictConfig here
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            for handler in logging.getLogger(name).handlers:
                if _formatter is not None:
                    _adopt(handler, _formatter)
        access = logging.getLogger("uvicorn.access")
        if _not_a_passed_health_probe not in access.filters:
            access.addFilter(_not_a_passed_health_probe)

    setattr(configure_logging_then_adopt, _OURS, True)
    module.Config.configure_logging = configure_logging_then_adopt


def _not_a_passed_health_probe(record: logging.LogRecord) -> bool:
    """Drop the access line of a health probe that succeeded (GET /health answered
    200, every 5 s from the container's own probe and from each SuperNode's:
    thousands of lines a day that say nothing). A failed probe is still logged."""
    args = record.args
    return not (isinstance(args, tuple) and len(args) == 5 and args[1] == "GET" and args[2] == "/health"
                and args[4] == 200)


def _show_app_output(module: ModuleType) -> None:
    """Let a SuperExec pass its ServerApp's output through to the container.

    Flower's SuperExec sends a ServerApp's stdout to /dev/null (the ServerApp
    pushes its logs to the SuperLink for `flwr log`). An operator's log
    aggregator reads the containers, so the per-client lines must be there too.
    """
    module.AutoExecPlugin.suppress_output = False


_TAKE_OVER: dict[str, Callable[[ModuleType], None]] = {
    "flwr.supercore.logger": _take_over_flower,
    "uvicorn.config": _take_over_uvicorn,
    "flwr.supercore.superexec.plugin.base_exec_plugin": _show_app_output,
}


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs the take-over for a module right after it is first imported."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        take_over = _TAKE_OVER.get(fullname)
        if take_over is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _LoaderThen(spec.loader, take_over)
        return spec


class _LoaderThen(importlib.abc.Loader):
    def __init__(self, loader: Any, then: Callable[[ModuleType], None]) -> None:
        self._loader = loader
        self._then = then

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        self._then(module)
