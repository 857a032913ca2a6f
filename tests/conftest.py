"""Shared test helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def json_lines(text: str) -> list[dict]:
    """Parse output that must be pure JSON Lines; fail on any other line."""
    events = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            pytest.fail(f"line {number} is not JSON: {line[:200]!r}")
        assert isinstance(event, dict), f"line {number} is not a JSON object: {line[:200]!r}"
        events.append(event)
    return events


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter of this environment (the .pth hook applies)."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        env={**os.environ, **env}, cwd=ROOT,
    )
