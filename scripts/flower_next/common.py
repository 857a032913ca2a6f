"""What every part of flower_next shares: the checkout, the distribution tried, running a command,
giving up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "flwr-nightly"


def fail(reason: str) -> None:
    print(f"flower_next: {reason}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def run(*command: str | Path, **kwargs) -> subprocess.CompletedProcess:
    print("+", " ".join(str(c) for c in command), flush=True)
    return subprocess.run([str(c) for c in command], cwd=ROOT, **kwargs)
