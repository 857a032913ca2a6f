"""The README's commands, as a newcomer types them on a fresh clone: from a shell
without the virtualenv on PATH. `make test` is what CI runs; `make simulation` is
tests/test_simulation.py; the Docker ones are here, and they are also this suite's
end-to-end run of the one-host compose federation: what every container of
`make federation` logged, and which site each SuperNode of `make federation-sites`
trained on, read from the containers it stopped."""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import time
from collections import Counter

import pytest

from tests.conftest import CHECKOUT, ROOT, Project, exchanges, fresh_shell_env, left_in_the_engine

QUICK_START = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)


def commands(block: str) -> list[str]:
    return [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]


def make(*targets: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", *targets], cwd=ROOT, env=fresh_shell_env(),
                          capture_output=True, text=True, timeout=1800)


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def make_on_a_terminal(*targets: str, timeout: float = 1800) -> tuple[int, str]:
    """make as a person at a terminal runs it (a pseudo-terminal): (exit status, what they saw)."""
    reader, terminal = os.openpty()
    person = {name: value for name, value in fresh_shell_env().items() if name != "CI"}  # CI: JSON, as piped
    process = subprocess.Popen(["make", "--no-print-directory", *targets], cwd=ROOT, env=person,
                               stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal)
    os.close(terminal)
    seen, deadline = bytearray(), time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([reader], [], [], 1)[0]:
                try:
                    chunk = os.read(reader, 65536)
                except OSError:  # EIO: every writer of the terminal is gone
                    break
                if not chunk:
                    break
                seen += chunk
            elif process.poll() is not None:  # make ended and its output is drained (a child may hold on)
                break
        process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
        os.close(reader)
    return process.returncode, ANSI.sub("", seen.decode(errors="replace"))


def test_the_quick_start_opens_with_the_two_commands():
    assert commands(QUICK_START) == ["make federation", "make test"]


# The checkout's own compose project, under the name Compose gives it (the folder's).
NODES, ROUNDS = 3, 3  # compose.yaml's defaults: what `make federation` runs


@pytest.fixture
def checkout_project(images):
    """The project `make` runs, from nothing: an earlier federation of this checkout's name (a
    developer's `make federation`, an earlier CI run on the same engine) is taken down with its
    volumes first, or its registered SuperNodes and runs would count. Afterwards `make down`, the
    cleanup the README gives, must leave none of its containers, networks or volumes."""
    for files in (["compose.yaml"], ["compose.yaml", "docker/compose.sites.yaml"]):
        Project(CHECKOUT, files, {"SITES_DIR": "/nonexistent"}).down()
    yield lambda *files: Project(CHECKOUT, list(files), {"SITES_DIR": "/nonexistent"})
    # `make down` as a user types it, held to this checkout's own federations (it also takes down the
    # aggregated, simulation and Ray ones, which a developer may keep running beside the tests).
    down = make("down", 'FEDERATIONS="compose.yaml" "compose.yaml docker/compose.sites.yaml"')
    assert down.returncode == 0, down.stdout[-2000:] + down.stderr[-2000:]
    assert left_in_the_engine(CHECKOUT) == []


@pytest.mark.docker
def test_make_federation_as_typed(checkout_project):
    status, seen = make_on_a_terminal("federation")
    assert status == 0, seen[-3000:]
    # What the person saw: the rounds as readable lines (scripts/watch.py), not the JSON behind them.
    for server_round, phase in sorted(exchanges(ROUNDS)):
        assert re.search(rf"^round {server_round}/{ROUNDS} {phase} +{NODES} ok +[0-9.]+ s$", seen, re.M), seen[-3000:]
    assert re.search(r"^run finished: accuracy 0\.\d+, 3 of 3 rounds aggregated; the model: \S+final_model.pt", seen, re.M)
    assert re.search(r"^run outcome: finished:completed$", seen, re.M), seen[-3000:]
    assert re.search(r"^every container's JSON lines: docker compose logs$", seen, re.M)
    assert '"event"' not in seen
    fed = checkout_project("compose.yaml")  # stopped, not removed: every container's log is there

    events = fed.logs("serverapp")
    rounds = [e for e in events if e["event"] == "client_round"]
    per_client = Counter((e["server_round"], e["phase"], e["node_id"]) for e in rounds)
    assert set(per_client.values()) == {1}
    assert len(per_client) == NODES * len(exchanges(ROUNDS))  # every SuperNode, every exchange
    assert {e["status"] for e in rounds} == {"ok"}
    assert len({e["node_id"] for e in rounds}) == NODES
    summaries = {(e["server_round"], e["phase"]) for e in events if e["event"] == "round_summary"}
    assert summaries == exchanges(ROUNDS)
    [finished] = [e for e in events if e["event"] == "run_finished"]
    assert finished["accuracy"] > 0.3  # chance is 0.1

    for service in ("superlink", "supernode", "submit", "certs", "register-supernodes"):
        lines = fed.logs(service)  # every line of every container is JSON
        assert lines and all({"timestamp", "level", "event"} <= set(e) for e in lines), service
    starts = [e for e in fed.logs("supernode") if e["event"] == "supernode_starting"]
    assert sorted(e["partition_id"] for e in starts) == list(range(NODES))
    assert all(e["tls"] for e in starts)  # TLS, and each with its own registered key:
    registered = [e for e in fed.logs("register-supernodes") if e["event"] == "supernode_registered"]
    activated = [e for e in fed.logs("superlink") if "[Fleet.ActivateNode] Activated" in e["event"]]
    assert len(registered) == len(activated) == NODES
    [outcome] = [e for e in fed.logs("submit") if e["event"] == "run_outcome"]
    assert outcome["status"] == "finished:completed"
    # Every message ran in a ClientApp forked warm (docker/clientapp_forkserver.py), none cold.
    node_events = [e["event"] for e in fed.logs("supernode")]
    assert node_events.count("forkserver_ready") == NODES and "clientapp_cold_start" not in node_events
    assert node_events.count("Start `flwr-clientapp` process") == NODES * len(exchanges(ROUNDS))


@pytest.fixture
def own_sites_kept(tmp_path):
    """`make sites` writes ./sites: a developer's own folder is put back afterwards."""
    own = ROOT / "sites"
    if own.exists():
        own.rename(tmp_path / "sites")
    yield
    shutil.rmtree(own, ignore_errors=True)
    if (tmp_path / "sites").exists():
        (tmp_path / "sites").rename(own)


def train_sizes(table: str) -> dict[str, int]:
    """site -> training examples, from the table `make sites` prints."""
    lines = [line.split() for line in table.splitlines()]
    header = next(i for i, cells in enumerate(lines) if cells[:4] == ["site", "format", "train", "val"])
    return {cells[0]: int(cells[2]) for cells in lines[header + 1:] if cells and cells[0].startswith("site-")}


@pytest.mark.docker
def test_make_sites_then_federation_sites_as_typed(checkout_project, own_sites_kept):
    sites = make("sites")
    assert sites.returncode == 0, sites.stderr
    sizes = train_sizes(sites.stdout)
    assert sorted(sizes) == sorted(p.name for p in (ROOT / "sites").iterdir()) == ["site-1", "site-2", "site-3"]
    result = make("federation-sites")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert '"status": "finished:completed"' in result.stdout
    # Replica N on site-N (compose.yaml with docker/compose.sites.yaml), each reporting its size.
    fed = checkout_project("compose.yaml", "docker/compose.sites.yaml")
    starts = [e for e in fed.logs("supernode") if e["event"] == "supernode_starting"]
    assert sorted(e["data_path"] for e in starts) == [f"/sites/site-{n}" for n in (1, 2, 3)]
    trained = Counter(e["metrics"]["num-examples"] for e in fed.logs("serverapp")
                      if e["event"] == "client_round" and e["phase"] == "train" and e["status"] == "ok")
    assert sorted(trained) == sorted(sizes.values()) and set(trained.values()) == {ROUNDS}
