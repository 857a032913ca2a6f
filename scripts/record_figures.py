"""Run a benchmark and keep what it printed as the figures the docs quote.

  python scripts/record_figures.py NAME -- COMMAND [ARGS...]

The command's output goes to the terminal as it comes and, when it succeeds, to
docs/figures/NAME.md, under when and where it was measured (date, CPU, cores,
memory, Docker and Flower versions). The docs link those files rather than
copying numbers that would go stale; a failed run leaves the last figures alone.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

FIGURES = Path(__file__).resolve().parent.parent / "docs" / "figures"


def first(path: str, prefix: str) -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path(path).read_text().splitlines()
                    if line.startswith(prefix))
    except (OSError, StopIteration):
        return "unknown"


def version(*command: str) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=30).stdout.strip() or "unknown"
    except OSError:
        return "not found"


def machine() -> str:
    memory_kib = first("/proc/meminfo", "MemTotal").split()[0]
    memory = f"{int(memory_kib) / 2**20:.0f} GiB" if memory_kib.isdigit() else "unknown"
    return (f"{first('/proc/cpuinfo', 'model name')}, {os.cpu_count()} cores, {memory}; "
            f"{platform.system()} {platform.release()}; "
            f"Docker {version('docker', 'version', '--format', '{{.Server.Version}}')}; "
            f"Python {platform.python_version()}; Flower {version(sys.executable, '-c', 'import flwr; print(flwr.__version__)')}")


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        sys.exit(__doc__)
    name, command = argv[0], argv[2:]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    lines = []
    for line in process.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        lines.append(line)
    if process.wait() != 0:
        print(f"record_figures: {' '.join(command)} failed (exit {process.returncode}); "
              f"docs/figures/{name}.md kept as it was", file=sys.stderr)
        return process.returncode
    measured = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    FIGURES.mkdir(parents=True, exist_ok=True)
    (FIGURES / f"{name}.md").write_text(
        f"# {name}\n\nMeasured {measured} by `make {name}` on: {machine()}.\n\n```\n{''.join(lines).strip()}\n```\n")
    print(f"record_figures: wrote docs/figures/{name}.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
