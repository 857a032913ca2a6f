"""End to end in Docker: build the images, run the compose federation, read the
containers' logs. Needs a Docker engine (CI has one); fails, not skips, without."""

from __future__ import annotations

import json
import uuid
from collections import Counter

import pytest

from tests.conftest import Project, sh

pytestmark = pytest.mark.docker

NODES, ROUNDS = 3, 2


class Federation(Project):
    """compose.yaml under a project name of its own."""

    def __init__(self, **knobs: str) -> None:
        super().__init__(f"flowerdock-test-{uuid.uuid4().hex[:8]}", ["compose.yaml"],
                         {"NUM_SUPERNODES": str(NODES), "NUM_ROUNDS": str(ROUNDS), **knobs})

    def up(self) -> int:
        # Naming `submit` makes Compose 2.2x follow it alone (not the one-shot `certs`).
        return self.compose("up", "--no-build", "--exit-code-from", "submit", "submit", check=False).returncode


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
    starts = [e for e in fed.logs("supernode") if e["event"] == "supernode_starting"]
    assert sorted(e["partition_id"] for e in starts) == list(range(NODES))
    assert all(e["tls"] for e in starts)  # TLS, and each with its own registered key:
    registered = [e for e in fed.logs("register-supernodes") if e["event"] == "supernode_registered"]
    activated = [e for e in fed.logs("superlink") if "[Fleet.ActivateNode] Activated" in e["event"]]
    assert len(registered) == len(activated) == NODES
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
