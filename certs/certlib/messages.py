"""What the operator reads: a refusal that says what to fix, and lines for a person or JSON."""

from __future__ import annotations

import datetime
import json
import os
import sys


class CertError(Exception):
    """Something the operator must fix; the message says what."""


def say(text: str, level: str = "info", stream=sys.stdout) -> None:
    """Plain lines for a person; JSON Lines where LOG_FORMAT=json (in containers)."""
    if os.getenv("LOG_FORMAT", "console") != "json":
        print(text, file=stream)
        return
    now = datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")
    for line in text.splitlines():
        # One write per line, newline included: nothing else's output can land inside it.
        stream.write(json.dumps({"timestamp": now, "level": level, "event": line.strip(), "logger": "certs"}) + "\n")
        stream.flush()
