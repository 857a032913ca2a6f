"""Shared test helpers."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The images' tag is the project's version (pyproject.toml), as compose's defaults and .env say
# (tests/test_config_defaults.py holds them to it).
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
_RUN_CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]


def exchanges(rounds: int) -> set[tuple[int, str]]:
    """The (round, phase) pairs in which a run of `rounds` rounds asks each node, on the default run
    config. With one-exchange (the default) a round is its train phase, whose reply also evaluates the
    model received, and the evaluate phase runs after the last round only (docs/round-latency.md)."""
    train = {(r, "train") for r in range(1, rounds + 1)}
    if _RUN_CONFIG["one-exchange"]:
        return train | {(rounds, "evaluate")}
    return train | {(r, "evaluate") for r in range(1, rounds + 1)}


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


def fresh_shell_env(**extra: str) -> dict[str, str]:
    """The environment of a newcomer's shell: no virtualenv on PATH, nothing Flower-specific set."""
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("FLWR_", "VIRTUAL_ENV", "RAY_", "APP_"))}
    return {**keep, "PATH": path, **extra}


# --- Docker end-to-end helpers (tests marked `docker`) -----------------------

def sh(*args: str, env: dict | None = None, timeout: int = 900, check: bool = True,
       input: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})}, input=input)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


# The compose projects and containers the tests make: "flowerdock-*", "fd-*", and the
# checkout's own (tests/test_readme.py runs `make federation` in it).
CHECKOUT = re.sub(r"[^a-z0-9_-]", "", ROOT.name.lower()).lstrip("_-")  # Compose's name for this folder
TEST_PROJECTS = ("flowerdock-", "fd-", f"{CHECKOUT}-", f"{CHECKOUT}_")


def engine_objects() -> set[str]:
    """Every container, volume and network of the engine that a test could have made: "kind name"."""
    found = set()
    for kind, listing in (("container", ["ps", "-a"]), ("volume", ["volume", "ls"]), ("network", ["network", "ls"])):
        names = sh("docker", *listing, "--format", "{{.Names}}" if kind == "container" else "{{.Name}}",
                   timeout=60).stdout.split()
        found |= {f"{kind} {name}" for name in names if name.startswith(TEST_PROJECTS)}
    return found


@pytest.fixture(scope="session")
def images():
    """Build every image the registry-free way where no registry is reachable. Torn down last of
    all: by then every test must have taken down all it started (nothing left in the engine)."""
    sh("docker", "info", timeout=60)  # a missing engine fails here, loudly
    before = engine_objects()
    sh("docker/build-images.sh", timeout=3000)
    yield
    left = sorted(engine_objects() - before)
    assert not left, f"the tests left these in the engine: {left}"


class Project:
    """One compose project; `down` removes its containers, networks and volumes."""

    def __init__(self, name: str, files: list[str], env: dict[str, str]) -> None:
        self.name, self.env = name, env
        self.files = [arg for f in files for arg in ("-f", f)]

    def compose(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return sh("docker", "compose", "-p", self.name, *self.files, *args, env=self.env, **kwargs)

    def containers(self, service: str) -> list[str]:
        return self.compose("ps", "-a", "-q", service).stdout.split()

    def logs(self, service: str) -> list[dict]:
        """A service's log lines, straight from the engine: every line must be JSON."""
        events = []
        for container in self.containers(service):
            out = sh("docker", "logs", container)
            for line in (out.stdout + out.stderr).splitlines():
                if line.strip():
                    try:
                        events.append(json.loads(line))
                    except ValueError:
                        pytest.fail(f"{service} printed a line that is not JSON: {line[:300]!r}")
        return events

    def down(self, check: bool = True) -> list[str]:
        """Every container (one-shots in profiles too: `--profile '*'`), network and volume; what
        the engine still holds of the project afterwards (check: none, or the test fails)."""
        self.compose("--profile", "*", "down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)
        left = left_in_the_engine(self.name)
        assert not (check and left), f"`down` left these of project {self.name}: {left}"
        return left


def left_in_the_engine(project: str) -> list[str]:
    """The containers, volumes and networks the engine still holds of a compose project."""
    return [f"{kind} {name}" for kind, listing in (("container", ["ps", "-a"]), ("volume", ["volume", "ls"]),
                                                    ("network", ["network", "ls"]))
            for name in sh("docker", *listing, "-q", "--filter", f"label=com.docker.compose.project={project}",
                           timeout=60).stdout.split()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_identity(run_id: int):
    """Flower's task identity as a ServerApp has it (Messages need a run ID), and JSON logging;
    restored afterwards. Use as a generator fixture: `yield from server_identity(RUN_ID)`."""
    from flwr.supercore.task_identity import TaskIdentity

    from flowerdock_logging import configure_logging

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, 0, 1
    configure_logging("json", "INFO")
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


@pytest.fixture(scope="session")
def cli_venv(tmp_path_factory) -> Path:
    """`make cli`: Flower's CLI alone, as locked (locks/cli.txt), as a laptop that submits runs has
    it. It downloads from PyPI (about 300 MB): the tests that use it are marked `network`."""
    venv = tmp_path_factory.mktemp("laptop") / "cli"
    result = subprocess.run(["make", "--no-print-directory", "cli", f"CLI_VENV={venv}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return venv


@pytest.fixture(scope="session")
def deployment(images, tmp_path_factory):
    """One deployment across "machines" (tests/deployment.py) for every module that needs one."""
    from tests.deployment import Deployment

    d = Deployment(tmp_path_factory.mktemp("deployment"))
    try:
        d.start()
        d.nodes_before = d.online_nodes()
        yield d
    finally:
        d.down()


@pytest.fixture
def unaffected(deployment):
    """Whatever a test tries, the federation keeps the same two SuperNodes online."""
    yield
    assert deployment.online_nodes() == deployment.nodes_before


def pytest_collection_modifyitems(items: list) -> None:
    """The tests on the shared deployment last and together: it runs from the first of them to
    the session's end, and would otherwise idle (and use CPU) through every module between."""
    items.sort(key=lambda item: "deployment" in getattr(item, "fixturenames", ()))
