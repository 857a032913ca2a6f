"""stdout and stderr of Flower's programs: every line a JSON object, whatever prints it."""

from __future__ import annotations

import atexit
import json
import os
import sys
from typing import Any

from flowerdock_logging.render import dumps, timestamp

OURS = "_flowerdock_handler"  # marks streams and handlers this package owns or took over

# The `flwr` CLI is a person's terminal tool (`flwr ls | grep`), not one of the
# project's processes: its output is Flower's, untouched.
USER_TOOLS = ("flwr",)


def program() -> str:
    return os.path.basename(sys.argv[0]) if getattr(sys, "argv", None) else ""


def guard_program_output() -> None:
    """Whatever else a Flower program prints (print() in its code, a banner) must
    not break the JSON Lines of a container's output. Only Flower's daemons and
    apps are guarded (flower-*, flwr-*: not pytest, not pip, not the `flwr` CLI),
    and never a terminal. Also called by a ClientApp forked from the warm launcher
    (docker/clientapp_forkserver.py), once it has its argv."""
    if os.getenv("LOG_FORMAT", "json").lower() == "json" and program().startswith(("flower-", "flwr-")):
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if stream is not None and not stream.isatty() and not getattr(stream, OURS, False):
                setattr(sys, name, JsonLinesGuard(stream, name))


class CurrentStdout:
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


class JsonLinesGuard:
    """A text stream that passes JSON-object lines through and wraps any other
    line as {"timestamp", "level", "event": <line>, "logger": "stdout"|"stderr"}."""

    def __init__(self, stream: Any, name: str) -> None:
        self._stream = stream
        self._name = name
        self._level = "info" if name == "stdout" else "error"
        self._pending = ""
        setattr(self, OURS, True)
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
        return dumps({"timestamp": timestamp(), "level": self._level, "event": stripped, "logger": self._name}) + "\n"

    def __getattr__(self, attr: str) -> Any:  # encoding, fileno, isatty, buffer...
        return getattr(self._stream, attr)
