"""`python -m scripts.flower_next` (`make flower-next`): the steps on the new venv, each with a
one-line verdict (what they are, and the package's parts: __init__.py)."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import __doc__ as OVERVIEW
from .common import PACKAGE, ROOT, run
from .pypi import newest_version
from .venv import HOST_VENV, NEXT_VENV, build_venv, check_flower, check_pip

FAST_TESTS = ["-m", "pytest", "-q", "-m", "not simulation and not docker and not network"]
# The nightly's local SuperLink: not Flower's default ports, which `make simulation` and
# tests/test_simulation.py use with the pinned Flower.
PORTS = {"FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": "39291", "FLWR_LOCAL_CONTROL_API_PORT": "39293"}


# --- the steps -----------------------------------------------------------------------------------

def internals() -> str:
    """Which entries of flowerdock_logging/flower_internals.py the nightly fails."""
    code = ("from flowerdock_logging.flower_internals import check\n"
            "for line in check(): print('  - ' + line)")
    result = run(NEXT_VENV / "bin" / "python", "-c", code, capture_output=True, text=True)
    print(result.stdout + result.stderr[-3000:], end="", flush=True)
    failing = sum(line.startswith("  - ") for line in result.stdout.splitlines())
    if result.returncode:
        return "could not run the check"
    return f"{failing} entr{'y' if failing == 1 else 'ies'} fail" if failing else "every entry holds"


def fast_tests(env: dict[str, str]) -> tuple[bool, str]:
    """The fast tests, streamed; the verdict is pytest's last line."""
    command = [str(NEXT_VENV / "bin" / "python"), *FAST_TESTS]
    print("+", " ".join(command), flush=True)
    last = ""
    with subprocess.Popen(command, cwd=ROOT, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as process:
        for line in process.stdout:
            print(line, end="", flush=True)
            last = line.strip() or last
    return process.returncode == 0, last


def simulation(env: dict[str, str]) -> tuple[bool, str]:
    """`make simulation` on the nightly: its own Flower home and ports; its SuperLink stopped after."""
    home = NEXT_VENV / "flwr-home"
    home.mkdir(exist_ok=True)
    shutil.copy(ROOT / ".flwr" / "config.toml", home / "config.toml")
    env = {**PORTS, **env, "FLWR_HOME": str(home), "APP_OUTPUT_DIR": str(NEXT_VENV / "outputs")}
    # -o: the target that called this made .venv already; this make must not remake it.
    make = ["make", "--no-print-directory", "-o", f"{HOST_VENV.name}/.installed",
            f"BIN={NEXT_VENV.name}/bin"]
    try:
        result = run(*make, "simulation", env=env)
        superlink = nightly_superlink(home)
    finally:
        run(*make, "simulation-stop", env=env)
    return result.returncode == 0, f"its SuperLink: {superlink or 'not found'}"


def nightly_superlink(home: Path) -> str:
    """The command line of the local SuperLink this run used, to show it is the nightly's."""
    marker = str(home.resolve() / "local-superlink") + "/"
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "flower-superlink" in line and marker in line:
            return " ".join(line.split()[:2])
    return ""


def timed(step, *args):
    started = time.monotonic()
    outcome = step(*args)
    return outcome, time.monotonic() - started


def main() -> int:
    argparse.ArgumentParser(prog="python -m scripts.flower_next", description=OVERVIEW,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    started = time.monotonic()
    version = newest_version()
    print(f"flower_next: {PACKAGE} {version}" + (" (FLOWER_NEXT)" if os.environ.get("FLOWER_NEXT") else
                                                  " (the newest pre-release on PyPI)"), flush=True)
    build_venv(version)
    check_flower(version)
    check_pip()
    env = {**os.environ, "PATH": f"{NEXT_VENV / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env.pop("VIRTUAL_ENV", None)
    found = internals()
    (tests_ok, tests_line), tests_s = timed(fast_tests, env)
    (sim_ok, sim_line), sim_s = timed(simulation, env)
    print(f"\nflower_next: {PACKAGE} {version}, {time.monotonic() - started:.0f} s in all")
    print(f"  flower internals: {found}")
    print(f"  fast tests:       {'PASSED' if tests_ok else 'FAILED'} ({tests_line}; {tests_s:.0f} s)")
    print(f"  make simulation:  {'PASSED' if sim_ok else 'FAILED'} ({sim_line}; {sim_s:.0f} s)", flush=True)
    return 0 if tests_ok and sim_ok else 1


if __name__ == "__main__":
    sys.exit(main())
