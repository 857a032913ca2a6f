"""Flower's and uvicorn's own handlers print our lines: taken over when their modules
are imported (now, or whenever they are), through an import hook.

Flower's logger has one console handler of its own, and uvicorn (Flower's HTTP APIs)
applies its logging config when a server starts: both would print plain text."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from flowerdock_logging.streams import OURS, CurrentStdout
from flowerdock_logging.superexec_output import show_serverapp_output

_formatter: logging.Formatter | None = None


def install(formatter: logging.Formatter) -> None:
    """Take over the modules imported already, and any imported later."""
    global _formatter
    _formatter = formatter
    for name, take_over in AFTER_IMPORT.items():
        if name in sys.modules:
            take_over(sys.modules[name])
    if not any(isinstance(finder, AfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, AfterImport())


def adopt(handler: logging.Handler, formatter: logging.Formatter) -> None:
    """Make a handler print our lines: our formatter, stdout, no blank events."""
    handler.setFormatter(formatter)
    # Flower's ConsoleHandler overrides format() and ignores its formatter.
    handler.format = formatter.format  # type: ignore[method-assign]
    if isinstance(handler, logging.StreamHandler):
        handler.setStream(CurrentStdout())
    if drop_blank not in handler.filters:
        handler.addFilter(drop_blank)
    setattr(handler, OURS, True)


def drop_blank(record: logging.LogRecord) -> bool:
    """Flower logs empty lines as visual separators; they carry no event."""
    try:
        return bool(str(record.getMessage()).strip())
    except Exception:  # noqa: BLE001
        return True


def take_over_flower(module: ModuleType) -> None:
    from flowerdock_logging.flower_internals import require  # here, not at every interpreter start

    require("flowerdock_logging/flower_hooks.py")  # what is taken over is still there (Flower's processes)
    if _formatter is not None:
        adopt(module.console_handler, _formatter)  # Flower's one console handler
    logging.getLogger("flwr").propagate = False  # that handler prints it, once


def take_over_uvicorn(module: ModuleType) -> None:
    original = module.Config.configure_logging
    if getattr(original, OURS, False):
        return

    def configure_logging_then_adopt(self: Any) -> None:
        original(self)  # uvicorn applies its (or Flower's) dictConfig here
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            for handler in logging.getLogger(name).handlers:
                if _formatter is not None:
                    adopt(handler, _formatter)
        access = logging.getLogger("uvicorn.access")
        if not_a_passed_health_probe not in access.filters:
            access.addFilter(not_a_passed_health_probe)

    setattr(configure_logging_then_adopt, OURS, True)
    module.Config.configure_logging = configure_logging_then_adopt


def not_a_passed_health_probe(record: logging.LogRecord) -> bool:
    """Drop the access line of a health probe that succeeded (GET /health answered
    200, every 2 s from the container's own probe and from each SuperNode's:
    thousands of lines a day that say nothing). A failed probe is still logged."""
    args = record.args
    return not (isinstance(args, tuple) and len(args) == 5 and args[1] == "GET" and args[2] == "/health"
                and args[4] == 200)


# module -> what to do right after it is imported
AFTER_IMPORT: dict[str, Callable[[ModuleType], None]] = {
    "flwr.supercore.logger": take_over_flower,
    "uvicorn.config": take_over_uvicorn,
    "flwr.supercore.superexec.plugin.base_exec_plugin": show_serverapp_output,
}


class AfterImport(importlib.abc.MetaPathFinder):
    """Runs the take-over for a module right after it is first imported."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        take_over = AFTER_IMPORT.get(fullname)
        if take_over is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = LoaderThen(spec.loader, take_over)
        return spec


class LoaderThen(importlib.abc.Loader):
    def __init__(self, loader: Any, then: Callable[[ModuleType], None]) -> None:
        self._loader = loader
        self._then = then

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        self._then(module)
