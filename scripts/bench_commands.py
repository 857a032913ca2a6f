"""Benchmark: the README's commands, timed as a user types them, from a shell without
the virtualenv on PATH, with the images already built (so `make images` is the
no-change image step every command pays).

  make bench-commands     (writes docs/figures/bench-commands.md)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = (
    ["make", "images"],             # nothing changed: should take seconds
    ["make", "federation"],         # 3 SuperNodes, 3 rounds, TLS, the image step included
    ["make", "simulation"],         # 10 virtual SuperNodes on this machine
    ["make", "simulation-stop"],
    ["make", "simulation-docker"],  # 1000 virtual SuperNodes, 25 per round, the image step included
)


def fresh_shell() -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)
    return {k: v for k, v in os.environ.items() if not k.startswith(("FLWR_", "VIRTUAL_ENV"))} | {"PATH": path}


def timed(command: list[str]) -> tuple[float, int]:
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, env=fresh_shell(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, timeout=1800)
    return time.monotonic() - started, result.returncode


if __name__ == "__main__":
    print("the README's commands from a fresh shell, images built (seconds, wall clock)")
    print(f"  {'command':<26}{'seconds':>9}{'exit':>6}")
    failed = False
    for command in COMMANDS:
        seconds, code = timed(command)
        failed |= code != 0
        print(f"  {' '.join(command):<26}{seconds:>9.1f}{code:>6}", flush=True)
    sys.exit(1 if failed else 0)
