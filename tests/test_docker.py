"""End to end in Docker: build the images, run the compose federation, read the
containers' logs. Needs a Docker engine (CI has one); fails, not skips, without."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections import Counter

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.docker

NODES, ROUNDS = 3, 2


def sh(*args: str, env: dict | None = None, timeout: int = 900, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="session")
def images():
    """Build every image the registry-free way where no registry is reachable."""
    sh("docker", "info", timeout=60)  # a missing engine fails here, loudly
    sh("docker/build-images.sh", timeout=3000)


class Federation:
    """One compose project, torn down (containers, networks, volumes) whatever happens."""

    def __init__(self, **knobs: str) -> None:
        self.project = f"flowerdock-test-{uuid.uuid4().hex[:8]}"
        self.env = {"NUM_SUPERNODES": str(NODES), "NUM_ROUNDS": str(ROUNDS), **knobs}

    def compose(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return sh("docker", "compose", "-p", self.project, *args, env=self.env, **kwargs)

    def up(self) -> int:
        return self.compose("up", "--no-build", "--exit-code-from", "submit", "submit", check=False).returncode

    def logs(self, service: str) -> list[dict]:
        """A service's log lines, straight from the engine: every line must be JSON."""
        events = []
        for container in self.compose("ps", "-a", "-q", service).stdout.split():
            out = sh("docker", "logs", container)
            for line in (out.stdout + out.stderr).splitlines():
                if line.strip():
                    try:
                        events.append(json.loads(line))
                    except ValueError:
                        pytest.fail(f"{service} printed a line that is not JSON: {line[:300]!r}")
        return events

    def down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)


@pytest.fixture
def federation(images):
    started = []

    def start(**knobs: str) -> Federation:
        started.append(Federation(**knobs))
        return started[-1]

    yield start
    for f in started:
        f.down()


def test_compose_federation_runs_to_the_end(federation):
    fed = federation()
    assert fed.up() == 0, fed.compose("logs", "--no-color", "--tail", "40").stdout[-4000:]

    events = fed.logs("serverapp")
    rounds = [e for e in events if e["event"] == "client_round"]
    per_client = Counter((e["server_round"], e["phase"], e["node_id"]) for e in rounds)
    assert set(per_client.values()) == {1}
    assert len(per_client) == NODES * ROUNDS * 2  # every SuperNode, every round, both phases
    assert {e["status"] for e in rounds} == {"ok"}
    assert len({e["node_id"] for e in rounds}) == NODES
    summaries = {(e["server_round"], e["phase"]) for e in events if e["event"] == "round_summary"}
    assert summaries == {(r, p) for r in range(1, ROUNDS + 1) for p in ("train", "evaluate")}
    [finished] = [e for e in events if e["event"] == "run_finished"]
    assert finished["accuracy"] > 0.3  # chance is 0.1

    for service in ("superlink", "supernode", "submit"):
        lines = fed.logs(service)  # every line of every container is JSON
        assert lines and all({"timestamp", "level", "event"} <= set(e) for e in lines)
    partitions = sorted(e["partition_id"] for e in fed.logs("supernode") if e["event"] == "supernode_starting")
    assert partitions == list(range(NODES))
    [outcome] = [e for e in fed.logs("submit") if e["event"] == "run_outcome"]
    assert outcome["status"] == "finished:completed"


def test_a_crashing_serverapp_fails_the_run_loudly(federation):
    # An unknown strategy makes the ServerApp raise at start.
    fed = federation(EXTRA_RUN_CONFIG='strategy="no-such-strategy"')
    assert fed.up() != 0
    [outcome] = [e for e in fed.logs("submit") if e["event"] == "run_outcome"]
    assert outcome["status"] == "finished:failed" and outcome["level"] == "error"
    assert any("strategy must be one of" in json.dumps(e) for e in fed.logs("serverapp"))


def test_a_supernode_without_its_partition_stops_with_a_clear_error(images):
    result = sh("docker", "run", "--rm", "-e", "NUM_PARTITIONS=3", "-e", "PARTITION_ID=7",
                "flowerdock/supernode:1.0.0", check=False, timeout=120)
    assert result.returncode == 2
    [event] = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert event["event"] == "supernode_config_invalid" and "outside 0..2" in event["error"]
